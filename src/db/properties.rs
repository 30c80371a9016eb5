//! What makes a database the app's besides its contents: its owner, its ACL (who may
//! connect), its connection limit, its `ALTER DATABASE ... SET` and `ALTER ROLE ... IN
//! DATABASE ... SET` settings and its comment. `pg_dump` without `--create` does not
//! carry them, `CREATE DATABASE ... TEMPLATE` does not copy them, and a rename leaves
//! the role settings with the renamed database: every copy stablehand may swap in gets
//! them from the live database first. Also the check that stablehand's role can
//! reproduce them and the backup's object owners, made before anything is created.

use anyhow::{bail, Context};
use serde::Deserialize;

use super::ops::{ident, literal};
use super::Database;

/// Settings whose value is a list: each element is quoted on its own (as pg_dump does),
/// so `search_path=app, "My Schema"` stays two schemas.
const LIST_SETTINGS: &[&str] = &[
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "shared_preload_libraries",
    "local_preload_libraries",
];

/// One entry of a database's ACL.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Grant {
    /// None: PUBLIC.
    pub grantee: Option<String>,
    pub privilege: String,
    pub grantable: bool,
}

/// `ALTER ROLE <role> IN DATABASE ... SET` entries of one role.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RoleSettings {
    pub role: String,
    /// `name=value`, as pg_db_role_setting keeps them.
    pub settings: Vec<String>,
}

/// A database's own properties.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Properties {
    pub owner: String,
    /// True when the ACL is the default (`datacl` is NULL).
    pub acl_default: bool,
    #[serde(default)]
    pub acl: Option<Vec<Grant>>,
    pub connection_limit: i32,
    /// `ALTER DATABASE ... SET` entries, `name=value`.
    pub settings: Vec<String>,
    pub role_settings: Vec<RoleSettings>,
    pub comment: Option<String>,
}

impl Properties {
    /// The statements that give database `name` these properties (one transaction).
    pub fn apply_sql(&self, name: &str) -> String {
        let db = ident(name);
        let mut sql = vec![format!(
            "alter database {db} owner to {}",
            ident(&self.owner)
        )];
        if !self.acl_default {
            sql.push(format!(
                "revoke all on database {db} from public, {}",
                ident(&self.owner)
            ));
            for g in self.acl.iter().flatten() {
                sql.push(format!(
                    "grant {} on database {db} to {}{}",
                    g.privilege,
                    g.grantee.as_deref().map(ident).unwrap_or("public".into()),
                    if g.grantable {
                        " with grant option"
                    } else {
                        ""
                    }
                ));
            }
        }
        if self.connection_limit != -1 {
            sql.push(format!(
                "alter database {db} connection limit {}",
                self.connection_limit
            ));
        }
        for s in &self.settings {
            if let Some(set) = set_clause(s) {
                sql.push(format!("alter database {db} {set}"));
            }
        }
        for r in &self.role_settings {
            for s in &r.settings {
                if let Some(set) = set_clause(s) {
                    sql.push(format!(
                        "alter role {} in database {db} {set}",
                        ident(&r.role)
                    ));
                }
            }
        }
        if let Some(c) = &self.comment {
            sql.push(format!("comment on database {db} is {}", literal(c)));
        }
        sql.join(";\n")
    }

    /// The roles these properties name (owner, grantees, roles with settings).
    fn roles(&self) -> Vec<String> {
        let mut roles = vec![self.owner.clone()];
        roles.extend(self.acl.iter().flatten().filter_map(|g| g.grantee.clone()));
        roles.extend(self.role_settings.iter().map(|r| r.role.clone()));
        roles
    }
}

/// `set <name> to <value>` for a `name=value` entry of pg_db_role_setting.
fn set_clause(entry: &str) -> Option<String> {
    let (name, value) = entry.split_once('=')?;
    let values = if LIST_SETTINGS.contains(&name.to_ascii_lowercase().as_str()) {
        split_list(value)
            .iter()
            .map(|v| literal(v))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        literal(value)
    };
    let name = name.split('.').map(ident).collect::<Vec<_>>().join(".");
    Some(format!("set {name} to {values}"))
}

/// The elements of a list setting (`a, "My Schema"`): split at commas outside double
/// quotes, each trimmed and unquoted.
fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut current)),
            c if c.is_whitespace() && !quoted && current.is_empty() => {}
            c => current.push(c),
        }
    }
    out.push(current);
    out.into_iter()
        .map(|s| s.trim_end().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

const PROPERTIES_SQL: &str = "select json_build_object(\
 'owner', pg_get_userbyid(d.datdba),\
 'acl_default', d.datacl is null,\
 'acl', (select json_agg(json_build_object('grantee', case when a.grantee = 0 then null else pg_get_userbyid(a.grantee) end, 'privilege', a.privilege_type, 'grantable', a.is_grantable) order by a.grantee, a.privilege_type) from aclexplode(d.datacl) a),\
 'connection_limit', d.datconnlimit,\
 'settings', coalesce((select to_json(s.setconfig) from pg_db_role_setting s where s.setdatabase = d.oid and s.setrole = 0), '[]'),\
 'role_settings', coalesce((select json_agg(json_build_object('role', pg_get_userbyid(s.setrole), 'settings', s.setconfig) order by s.setrole) from pg_db_role_setting s where s.setdatabase = d.oid and s.setrole <> 0), '[]'),\
 'comment', shobj_description(d.oid, 'pg_database'))\
 from pg_database d where d.datname = ";

impl Database {
    /// The properties of database `name` (read from the maintenance database).
    pub fn properties_of(&self, name: &str) -> anyhow::Result<Properties> {
        match self.properties_if_exists(name)? {
            Some(p) => Ok(p),
            None => bail!("database {name:?} does not exist"),
        }
    }

    /// The properties of database `name`, or None when there is no such database.
    pub fn properties_if_exists(&self, name: &str) -> anyhow::Result<Option<Properties>> {
        let out = self
            .maintenance()
            .query(&format!("{PROPERTIES_SQL}{}", literal(name)))?;
        if out.is_empty() {
            return Ok(None);
        }
        let mut p: Properties = serde_json::from_str(&out)
            .with_context(|| format!("reading database {name}'s owner, ACL and settings"))?;
        if p.acl_default {
            p.acl = None;
        }
        Ok(Some(p))
    }

    /// Gives database `name` the properties `p` (one transaction; on failure nothing is
    /// changed and the error names what could not be reproduced).
    pub fn apply_properties(&self, name: &str, p: &Properties) -> anyhow::Result<()> {
        self.maintenance()
            .query(&p.apply_sql(name))
            .with_context(|| {
                format!(
                    "giving {name} the live database's owner ({}), ACL and settings",
                    p.owner
                )
            })?;
        Ok(())
    }

    /// Problems that would keep stablehand's role from making a faithful copy of the
    /// live database: roles that do not exist, object or database owners it cannot act
    /// as, settings it may not set. Empty when a copy can be made.
    pub fn reproduction_problems(
        &self,
        p: &Properties,
        object_owners: &[String],
    ) -> anyhow::Result<Vec<String>> {
        let mut owners: Vec<String> = object_owners.to_vec();
        owners.push(p.owner.clone());
        // pg_database_owner is whoever owns the database (PostgreSQL 14+'s owner of
        // `public`): nothing to reproduce.
        owners.retain(|o| !o.is_empty() && o != "pg_database_owner");
        owners.sort();
        owners.dedup();
        let mut roles = p.roles();
        roles.extend(owners.iter().cloned());
        roles.retain(|r| !r.is_empty() && r != "pg_database_owner");
        roles.sort();
        roles.dedup();
        let array = |v: &[String]| {
            format!(
                "array[{}]::text[]",
                v.iter().map(|s| literal(s)).collect::<Vec<_>>().join(", ")
            )
        };
        let setting_roles: Vec<String> = p.role_settings.iter().map(|r| r.role.clone()).collect();
        let setting_names: Vec<String> = p
            .settings
            .iter()
            .chain(p.role_settings.iter().flat_map(|r| r.settings.iter()))
            .filter_map(|s| s.split_once('=').map(|(n, _)| n.to_string()))
            .collect();
        let sql = format!(
            "with me as (select rolsuper, rolcreaterole from pg_roles where rolname = current_user) \
             select json_build_object(\
              'superuser', (select rolsuper from me), \
              'missing', (select coalesce(json_agg(r), '[]') from unnest({roles}) r where not exists (select from pg_roles where rolname = r)), \
              'not_member', (select coalesce(json_agg(r), '[]') from unnest({owners}) r where exists (select from pg_roles where rolname = r) and not pg_has_role(current_user, r, 'MEMBER')), \
              'role_settings', (select coalesce(json_agg(r), '[]') from unnest({setting_roles}) r join pg_roles x on x.rolname = r \
                  where r <> current_user and not ((select rolcreaterole from me) and not x.rolsuper)), \
              'superuser_settings', (select coalesce(json_agg(distinct n), '[]') from unnest({setting_names}) n join pg_settings s on s.name = n where s.context in ('superuser', 'postmaster', 'sighup', 'internal', 'backend', 'superuser-backend')))",
            roles = array(&roles),
            owners = array(&owners),
            setting_roles = array(&setting_roles),
            setting_names = array(&setting_names),
        );
        #[derive(Deserialize)]
        struct Found {
            superuser: bool,
            missing: Vec<String>,
            not_member: Vec<String>,
            role_settings: Vec<String>,
            superuser_settings: Vec<String>,
        }
        let out = self.maintenance().query(&sql)?;
        let found: Found =
            serde_json::from_str(&out).context("checking what stablehand's role may reproduce")?;
        let mut problems = Vec::new();
        if !found.missing.is_empty() {
            problems.push(format!(
                "role(s) {} own objects in the backup or are named by the database's ACL or settings, but do not exist on this server (create them first)",
                found.missing.join(", ")
            ));
        }
        if found.superuser {
            return Ok(problems);
        }
        if !found.not_member.is_empty() {
            problems.push(format!(
                "stablehand's role is not a member of {} and so cannot make them the owners of the restored objects and database (GRANT {} TO <stablehand's role>, or connect as a superuser)",
                found.not_member.join(", "),
                found.not_member.join(", ")
            ));
        }
        if !found.role_settings.is_empty() {
            problems.push(format!(
                "the live database has ALTER ROLE ... IN DATABASE settings for {}, which only a superuser (or a role with CREATEROLE, for roles that are not superusers) can set",
                found.role_settings.join(", ")
            ));
        }
        if !found.superuser_settings.is_empty() {
            problems.push(format!(
                "the live database sets {}, which only a superuser can set",
                found.superuser_settings.join(", ")
            ));
        }
        Ok(problems)
    }
}

/// The roles that own objects in the connected database (relations, schemas, types,
/// functions) or hold default privileges there.
const OBJECT_OWNERS_SQL: &str = "select coalesce(json_agg(distinct r), '[]') from (\
 select pg_get_userbyid(c.relowner) as r from pg_class c join pg_namespace n on n.oid = c.relnamespace \
   where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_%' \
 union select pg_get_userbyid(nspowner) from pg_namespace where nspname not in ('pg_catalog', 'information_schema') and nspname not like 'pg\\_%' \
 union select pg_get_userbyid(t.typowner) from pg_type t join pg_namespace n on n.oid = t.typnamespace \
   where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_%' \
 union select pg_get_userbyid(p.proowner) from pg_proc p join pg_namespace n on n.oid = p.pronamespace \
   where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_%' \
 union select pg_get_userbyid(defaclrole) from pg_default_acl) owners";

impl Database {
    /// What would keep a restore (or snapshot) of the live database from being
    /// faithful, judged from the live database itself (its object owners, owner, ACL
    /// and settings): checked before a deploy, whose rollback may need a restore, and
    /// by doctor. Empty when nothing would.
    pub fn faithful_copy_problems(&self) -> anyhow::Result<Vec<String>> {
        let properties = self.properties_of(&self.name)?;
        let owners: Vec<String> = serde_json::from_str(&self.query(OBJECT_OWNERS_SQL)?)
            .context("reading the owners of the database's objects")?;
        self.reproduction_problems(&properties, &owners)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_settings_keep_their_elements() {
        assert_eq!(split_list("app, public"), vec!["app", "public"]);
        assert_eq!(
            split_list("\"My Schema\", \"we\"\"ird\",public"),
            vec!["My Schema", "we\"ird", "public"]
        );
        assert_eq!(
            set_clause("search_path=app, \"$user\"").unwrap(),
            "set \"search_path\" to 'app', '$user'"
        );
        assert_eq!(
            set_clause("work_mem=64MB").unwrap(),
            "set \"work_mem\" to '64MB'"
        );
        assert_eq!(
            set_clause("app.greeting=it's, fine").unwrap(),
            "set \"app\".\"greeting\" to 'it''s, fine'"
        );
    }

    #[test]
    fn the_acl_is_replaced_only_when_it_is_not_the_default() {
        let mut p = Properties {
            owner: "app".into(),
            acl_default: true,
            acl: None,
            connection_limit: -1,
            settings: vec![],
            role_settings: vec![],
            comment: None,
        };
        assert_eq!(p.apply_sql("x"), "alter database \"x\" owner to \"app\"");
        p.acl_default = false;
        p.acl = Some(vec![Grant {
            grantee: Some("app_rw".into()),
            privilege: "CONNECT".into(),
            grantable: false,
        }]);
        assert_eq!(
            p.apply_sql("x"),
            "alter database \"x\" owner to \"app\";\nrevoke all on database \"x\" from public, \"app\";\ngrant CONNECT on database \"x\" to \"app_rw\""
        );
    }
}
