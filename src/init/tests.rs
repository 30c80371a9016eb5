use super::*;

const COMPOSE: &str = r#"
services:
  postgres:
    image: postgres:16
    environment:
      POSTGRES_USER: ${DB_USER:-charhub}
      POSTGRES_PASSWORD: ${DB_PASSWORD}
      POSTGRES_DB: charhub_db
  backend:
    build: ./backend
    ports: ["3000:3000"]
    healthcheck:
      test: ["CMD", "wget", "--spider", "http://localhost:3000/api/health"]
  frontend:
    build: ./frontend
    ports: ["127.0.0.1:8080:80"]
  redis:
    image: redis:7
"#;

#[test]
fn reading_the_file_itself_interpolates_and_merges() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("docker-compose.yml"), COMPOSE).unwrap();
    std::fs::write(
        d.join("docker-compose.prod.yml"),
        "services:\n  postgres:\n    env_file: db.env\n    environment:\n      POSTGRES_DB: ${PROD_DB}\n",
    )
    .unwrap();
    std::fs::write(d.join(".env"), "PROD_DB=\"prod_db\"\n").unwrap();
    std::fs::write(d.join("db.env"), "# comment\nPOSTGRES_USER=from_env_file\n").unwrap();
    let doc = read_files_directly(
        d,
        &[
            "docker-compose.yml".into(),
            "docker-compose.prod.yml".into(),
        ],
    )
    .unwrap();
    let r = parse_resolved(&doc).unwrap();
    let pg = postgres_service(&r).unwrap();
    assert_eq!(pg.var("POSTGRES_DB"), Some("prod_db"));
    // `environment` wins over env_file, as in Compose.
    assert_eq!(pg.var("POSTGRES_USER"), Some("charhub"));
    assert_eq!(
        r.service("backend").unwrap().build_context.as_deref(),
        Some("./backend")
    );
}

#[test]
fn interpolation() {
    let vars = |n: &str| match n {
        "SET" => Some("v".to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    assert_eq!(interpolate("${SET}-$SET-${NOPE:-d}", &vars), "v-v-d");
    assert_eq!(interpolate("${EMPTY:-d}|${EMPTY-d}|${NOPE}", &vars), "d||");
}

#[test]
fn the_rendered_config_parses_and_says_what_it_found() {
    let d = Detected {
            compose_files: vec!["docker-compose.production.yml".into()],
            compose_reason: Some("the workflow .github/workflows/deploy.yml runs compose -f docker-compose.production.yml".into()),
            other_compose_files: vec!["docker-compose.yml".into()],
            resolved_with: Some("`docker-compose config`".into()),
            project: "charhub".into(),
            db_service: Some("postgres".into()),
            db_user: Some("charhub".into()),
            db_name: Some("charhub_db".into()),
            db_user_from: Some("POSTGRES_USER".into()),
            db_name_from: Some("POSTGRES_DB".into()),
            app_services: vec!["backend".into(), "frontend".into()],
            prisma: true,
            migrations_dir: Some("backend/prisma/migrations".into()),
            migrations_from: Some("beside backend/prisma/schema.prisma".into()),
            git_remote: Some("origin".into()),
            git_branch: Some("main".into()),
            health_urls: vec![("http://127.0.0.1:8080/health".into(), "frontend: published".into())],
            health_guesses: vec!["http://127.0.0.1:9/health".into()],
            health_lines: vec!["backend: Docker's health status".into()],
            notes: vec!["look".into()],
        };
    let text = render(&d);
    let c = crate::config::parse(&text, Path::new("stablehand.toml")).unwrap();
    assert_eq!(c.database.name.as_deref(), Some("charhub_db"));
    assert_eq!(c.database.user, "charhub");
    assert_eq!(c.database.migrations, "prisma");
    assert_eq!(
        c.database.migrations_dir,
        Path::new("backend/prisma/migrations")
    );
    assert_eq!(
        c.runtime.files,
        [PathBuf::from("docker-compose.production.yml")]
    );
    assert_eq!(
        c.runtime.services.as_deref(),
        Some(&["backend".to_string(), "frontend".to_string()][..])
    );
    assert_eq!(c.health.containers, ["backend", "frontend"]);
    assert_eq!(c.health.http.len(), 1);
    assert_eq!(c.health.http[0].url, "http://127.0.0.1:8080/health");
    assert_eq!(c.git.branch.as_deref(), Some("main"));
    assert!(
        text.contains("Also here, not used: docker-compose.yml"),
        "{text}"
    );
    // Without a compose file: direct mode, and it still parses.
    let bare = render(&Detected {
        project: "x".into(),
        ..Default::default()
    });
    let c = crate::config::parse(&bare, Path::new("stablehand.toml")).unwrap();
    assert_eq!(c.database.mode, crate::config::DbMode::Direct);
    assert!(!c.git.push || bare.contains("push = false"));
}
