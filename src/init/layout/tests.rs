use super::*;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn file_choice_follows_the_server() {
    let present = s(&["docker-compose.production.yml", "docker-compose.yml"]);
    let explicit = choose_files(&s(&["a.yml", "b.yml"]), &[], &present).unwrap();
    assert_eq!(explicit.files, ["a.yml", "b.yml"]);
    assert_eq!(explicit.reason, "given with --file");

    let wf = vec![
        (
            ".github/workflows/ci.yml".to_string(),
            vec![s(&["docker-compose.yml"])],
        ),
        (
            ".github/workflows/deploy.yml".to_string(),
            vec![s(&["docker-compose.production.yml"])],
        ),
    ];
    let c = choose_files(&[], &wf, &present).unwrap();
    assert_eq!(c.files, ["docker-compose.production.yml"]);
    assert!(c.reason.contains("deploy.yml"), "{}", c.reason);
    assert_eq!(c.others, ["docker-compose.yml"]);

    let c = choose_files(&[], &[], &present).unwrap();
    assert_eq!(c.files, ["docker-compose.production.yml"]);
    assert!(c.reason.contains("production"));

    let c = choose_files(&[], &[], &s(&["compose.yaml", "docker-compose.yml"])).unwrap();
    assert_eq!(c.files, ["compose.yaml"]);
    assert_eq!(c.others, ["docker-compose.yml"]);

    let c = choose_files(
        &[],
        &[],
        &s(&["docker-compose.override.yml", "docker-compose.yml"]),
    )
    .unwrap();
    assert_eq!(
        c.files,
        ["docker-compose.yml", "docker-compose.override.yml"]
    );
    assert!(choose_files(&[], &[], &[]).is_none());
}

#[test]
fn production_names() {
    for n in [
        "docker-compose.prod.yml",
        "docker-compose.production.yml",
        "compose.prod.yaml",
        "docker-compose-prod.yml",
    ] {
        assert!(is_production_name(n), "{n}");
    }
    for n in [
        "docker-compose.yml",
        "compose.products.yaml",
        "docker-compose.dev.yml",
    ] {
        assert!(!is_production_name(n), "{n}");
    }
    assert!(is_compose_file_name("docker-compose.production.yml"));
    assert!(!is_compose_file_name("Dockerfile"));
}

#[test]
fn workflows_name_their_compose_files() {
    let wf = r#"
jobs:
  deploy:
    steps:
      - run: |
          ssh "$HOST" "cd /srv/app && docker-compose -f docker-compose.production.yml pull && \
            docker-compose -f ./docker-compose.production.yml up -d --build"
      - run: docker compose --file compose.yaml --file=compose.prod.yaml config
      - run: docker-compose -f "$FILE" up
      - run: echo nothing here
"#;
    assert_eq!(
        compose_file_sets(wf),
        vec![
            s(&["docker-compose.production.yml"]),
            s(&["compose.yaml", "compose.prod.yaml"])
        ]
    );
    assert_eq!(
        compose_file_sets("env:\n  COMPOSE_FILE: docker-compose.yml:docker-compose.prod.yml\n"),
        vec![s(&["docker-compose.yml", "docker-compose.prod.yml"])]
    );
}

const V1_CONFIG: &str = r#"
secrets:
  db_user:
    file: /srv/app/secrets/db_user
services:
  backend:
    build:
      context: /srv/app/backend
    expose:
    - '3000'
    healthcheck:
      test:
      - CMD
      - wget
      - --spider
      - http://127.0.0.1:3000/api/v1/health
  nginx:
    image: nginx
    ports:
    - published: 80
      target: 80
    - 127.0.0.1:8443:443/tcp
  postgres:
    environment:
      POSTGRES_DB: charhub_db
      POSTGRES_PASSWORD: hunter2
      POSTGRES_USER: charhub
    image: postgres:16
  api:
    build:
      context: /srv/app
    ports:
    - target: 3000
      published: 13000
    healthcheck:
      test: curl -fsS localhost:3000/healthz || exit 1
  worker:
    build: {context: /srv/app}
    network_mode: host
    healthcheck:
      test: ["CMD-SHELL", "wget -qO- http://localhost:9100/ready"]
  cron:
    build: {context: /srv/app}
    healthcheck:
      test: ["CMD", "pgrep", "cron"]
  sidecar:
    build: {context: /srv/app}
    ports: ["8088:8080"]
    healthcheck:
      disable: true
version: '3.8'
"#;

fn resolved() -> Resolved {
    parse_resolved(&serde_norway::from_str(V1_CONFIG).unwrap()).unwrap()
}

#[test]
fn health_comes_from_what_the_app_declares() {
    let r = resolved();
    let h = |n: &str| service_health(r.service(n).unwrap());
    assert!(
        matches!(h("backend"), ServiceHealth::Healthcheck { why } if why.contains("not published")),
        "expose only: gated on its healthcheck"
    );
    assert_eq!(
        h("api"),
        ServiceHealth::Probe {
            url: "http://127.0.0.1:13000/healthz".into(),
            why: "its healthcheck calls http://localhost:3000/healthz, and port 3000 is published on 127.0.0.1:13000".into()
        }
    );
    assert!(
        matches!(h("worker"), ServiceHealth::Probe { url, .. } if url == "http://127.0.0.1:9100/ready")
    );
    assert!(matches!(h("cron"), ServiceHealth::Healthcheck { .. }));
    assert_eq!(
        h("sidecar"),
        ServiceHealth::Running {
            guess: Some("http://127.0.0.1:8088/health".into())
        }
    );
    // The proxy's published port is never taken for another service.
    assert_eq!(
        h("nginx"),
        ServiceHealth::Running {
            guess: Some("http://127.0.0.1:80/health".into())
        }
    );
    let nginx = r.service("nginx").unwrap();
    assert_eq!(
        nginx.ports[1],
        Port {
            host_ip: Some("127.0.0.1".into()),
            published: Some(8443),
            target: 443
        }
    );
}

#[test]
fn a_v2_json_config_reads_the_same() {
    let json = r#"{"name":"shop","services":{"db":{"image":"postgres:16","environment":{"POSTGRES_USER":"shop","POSTGRES_PASSWORD":null}},
            "api":{"build":{"context":"/srv/shop"},"ports":[{"mode":"ingress","host_ip":"127.0.0.1","target":8080,"published":"18080","protocol":"tcp"}],
            "healthcheck":{"test":["CMD","wget","-q","--spider","http://127.0.0.1:8080/health"],"interval":"5s"}}}}"#;
    let doc: Value = serde_json::from_str(json).unwrap();
    let r = parse_resolved(&doc).unwrap();
    assert!(
        matches!(service_health(r.service("api").unwrap()), ServiceHealth::Probe { url, .. } if url == "http://127.0.0.1:18080/health")
    );
    let db = postgres_service(&r).unwrap();
    let id = db_identity(&r, db, &|_| None).unwrap();
    assert_eq!((id.user.as_str(), id.name.as_str()), ("shop", "shop"));
}

#[test]
fn database_identity_from_the_resolved_service() {
    let r = resolved();
    let pg = postgres_service(&r).unwrap();
    assert_eq!(pg.name, "postgres");
    let id = db_identity(&r, pg, &|_| None).unwrap();
    assert_eq!(
        (id.user.as_str(), id.name.as_str()),
        ("charhub", "charhub_db")
    );

    // An interpolated variable that is not set here: an error that says so, never postgres.
    let mut empty = pg.clone();
    empty.env = vec![
        ("POSTGRES_USER".into(), Some(String::new())),
        ("POSTGRES_DB".into(), Some(String::new())),
    ];
    let err = db_identity(&r, &empty, &|_| None).unwrap_err();
    assert!(err.contains("POSTGRES_USER is empty"), "{err}");

    // *_FILE through a secret and through a bind mount; the password file is never read.
    let mut files = pg.clone();
    files.env = vec![
        (
            "POSTGRES_USER_FILE".into(),
            Some("/run/secrets/db_user".into()),
        ),
        ("POSTGRES_DB_FILE".into(), Some("/conf/db/name".into())),
        (
            "POSTGRES_PASSWORD_FILE".into(),
            Some("/run/secrets/db_pw".into()),
        ),
    ];
    files.secrets = vec![("db_user".into(), "/run/secrets/db_user".into())];
    files.binds = vec![
        ("/srv/app/conf".into(), "/conf".into()),
        ("/srv/app/dbconf".into(), "/conf/db".into()),
    ];
    let read = |p: &str| match p {
        "/srv/app/secrets/db_user" => Some("app_user\n".to_string()),
        "/srv/app/dbconf/name" => Some("app_db".to_string()),
        other => panic!("read {other}"),
    };
    let id = db_identity(&r, &files, &read).unwrap();
    assert_eq!((id.user.as_str(), id.name.as_str()), ("app_user", "app_db"));
    assert!(id.user_from.contains("POSTGRES_USER_FILE"));

    // The official image with no user variable: its documented default, said so.
    let mut bare = pg.clone();
    bare.env = vec![("POSTGRES_PASSWORD".into(), Some("x".into()))];
    let id = db_identity(&r, &bare, &|_| None).unwrap();
    assert_eq!(
        (id.user.as_str(), id.name.as_str()),
        ("postgres", "postgres")
    );
    assert!(id.user_from.contains("default"));
    // A custom image with no variable: unknown.
    bare.image = Some("acme/db:1".into());
    bare.env.clear();
    assert!(db_identity(&r, &bare, &|_| None).is_err());
}

#[test]
fn prisma_locations() {
    assert_eq!(
        prisma_config_paths("export default defineConfig({\n  schema: \"prisma/schema.prisma\",\n  migrations: { path: 'db/migrations' },\n})"),
        (Some("prisma/schema.prisma".into()), Some("db/migrations".into()))
    );
    assert_eq!(
        package_json_schema(r#"{"name":"api","prisma":{"schema":"db/schema.prisma"}}"#).as_deref(),
        Some("db/schema.prisma")
    );
    assert_eq!(
        join_relative("apps/api", "../api/prisma/x").as_deref(),
        Some("apps/api/prisma/x")
    );
    assert_eq!(join_relative("", "../x"), None);
    let found = |schema: &str| PrismaSchema {
        schema: schema.into(),
        migrations: schema.rsplit_once('/').unwrap().0.to_string() + "/migrations",
        how: "found".into(),
    };
    let schemas = vec![
        found("apps/web/prisma/schema.prisma"),
        found("apps/api/prisma/schema.prisma"),
    ];
    assert_eq!(
        choose_prisma(&schemas, &s(&["apps/api"]))
            .unwrap()
            .migrations,
        "apps/api/prisma/migrations"
    );
}

#[test]
fn ledger_and_folders() {
    let dir = "backend/prisma/migrations";
    assert!(matches!(
        ledger_matches(&[], None, dir),
        LedgerMatch::Warn(_)
    ));
    assert!(matches!(
        ledger_matches(&s(&["001_init"]), None, dir),
        LedgerMatch::Fail(_)
    ));
    assert!(matches!(
        ledger_matches(&s(&["001_init"]), Some(&s(&["001_init", "002_x"])), dir),
        LedgerMatch::Ok(_)
    ));
    assert!(matches!(
        ledger_matches(&s(&["001_init", "002_x"]), Some(&s(&["002_x"])), dir),
        LedgerMatch::Warn(_)
    ));
    assert!(matches!(
        ledger_matches(&s(&["001_init"]), Some(&s(&["20240101_other"])), dir),
        LedgerMatch::Fail(_)
    ));
}

#[test]
fn running_compose_files_are_compared() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("docker-compose.yml"), "").unwrap();
    std::fs::write(d.join("docker-compose.production.yml"), "").unwrap();
    let wd = d.display().to_string();
    let prod = vec![d.join("docker-compose.production.yml")];
    assert!(running_files_match(
        &[("docker-compose.production.yml".into(), wd.clone())],
        &prod
    )
    .is_ok());
    let abs = d
        .join("docker-compose.production.yml")
        .display()
        .to_string();
    assert!(running_files_match(&[(abs, "/elsewhere".into())], &prod).is_ok());
    let err = running_files_match(&[("docker-compose.yml".into(), wd)], &prod).unwrap_err();
    assert!(
        err.contains("docker-compose.yml") && err.contains("production"),
        "{err}"
    );
}
