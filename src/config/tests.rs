//! Loading and validating configuration: layering, unknown keys, values naming their keys.

// figment's Jail closures must return figment's own (large) error type.
#![allow(clippy::result_large_err)]

use std::path::Path;

use super::auth::KNOWN_JWT_SECRETS;
use super::*;
use figment::Jail;

const GOOD_SECRET: &str = "0123456789abcdef0123456789abcdef";

fn load_err(mode: Mode, path: Option<&Path>) -> String {
    Config::load(mode, path).expect_err("configuration should be refused").to_string()
}

#[test]
fn defaults_apply_without_file_or_env() {
    Jail::expect_with(|_| {
        let config = Config::load(Mode::Serve, None).expect("defaults load");
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(config.database.max_connections, 10);
        assert_eq!(config.auth.issuer, "infrahub");
        assert_eq!(config.logging.format, LogFormat::Text);
        Ok(())
    });
}

#[test]
fn file_overrides_defaults_and_env_overrides_file() {
    Jail::expect_with(|jail| {
        jail.create_file(
            DEFAULT_CONFIG_PATH.rsplit('/').next().unwrap(),
            "[http]\nlisten = \"0.0.0.0:9000\"\n[database]\nmax_connections = 3\n",
        )?;
        let path = jail.directory().join("infrahub.toml");
        let from_file = Config::load(Mode::Serve, Some(&path)).expect("file loads");
        assert_eq!(from_file.http.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(from_file.database.max_connections, 3);
        assert_eq!(from_file.database.min_connections, 0, "unset keys keep defaults");

        jail.set_env("INFRAHUB_DATABASE__MAX_CONNECTIONS", "7");
        jail.set_env("INFRAHUB_LOGGING__FORMAT", "json");
        let layered = Config::load(Mode::Serve, Some(&path)).expect("env loads");
        assert_eq!(layered.database.max_connections, 7);
        assert_eq!(layered.http.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(layered.logging.format, LogFormat::Json);
        Ok(())
    });
}

#[test]
fn default_path_is_read_when_present() {
    Jail::expect_with(|jail| {
        std::fs::create_dir_all(jail.directory().join("config")).unwrap();
        jail.create_file(DEFAULT_CONFIG_PATH, "[auth]\ntoken_ttl_secs = 60\n")?;
        let config = Config::load(Mode::Serve, None).expect("loads");
        assert_eq!(config.auth.token_ttl_secs, 60);
        Ok(())
    });
}

#[test]
fn infrahub_config_env_is_not_a_key() {
    Jail::expect_with(|jail| {
        jail.set_env("INFRAHUB_CONFIG", "/nonexistent.toml");
        Config::load(Mode::Serve, None).expect("INFRAHUB_CONFIG is ignored by figment");
        Ok(())
    });
}

#[test]
fn unknown_key_in_file_is_named() {
    Jail::expect_with(|jail| {
        jail.create_file("c.toml", "[http]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n")?;
        let err = load_err(Mode::Serve, Some(&jail.directory().join("c.toml")));
        assert!(err.contains("listne"), "{err}");
        Ok(())
    });
}

#[test]
fn unknown_section_is_named() {
    Jail::expect_with(|jail| {
        jail.create_file("c.toml", "[htpp]\nlisten = \"127.0.0.1:1\"\n")?;
        let err = load_err(Mode::Serve, Some(&jail.directory().join("c.toml")));
        assert!(err.contains("htpp"), "{err}");
        Ok(())
    });
}

#[test]
fn unknown_env_key_is_named() {
    Jail::expect_with(|jail| {
        jail.set_env("INFRAHUB_DATABASE__MAX_CONECTIONS", "4");
        let err = load_err(Mode::Serve, None);
        assert!(err.contains("max_conections"), "{err}");
        Ok(())
    });
}

#[test]
fn wrong_type_names_key_and_source() {
    Jail::expect_with(|jail| {
        jail.set_env("INFRAHUB_HTTP__LISTEN", "not-an-address");
        let err = load_err(Mode::Serve, None);
        assert!(err.contains("http.listen"), "{err}");
        assert!(err.contains("INFRAHUB_HTTP__LISTEN"), "{err}");
        Ok(())
    });
}

#[test]
fn bad_toml_is_reported() {
    Jail::expect_with(|jail| {
        jail.create_file("c.toml", "[http\nlisten=")?;
        let err = load_err(Mode::Serve, Some(&jail.directory().join("c.toml")));
        assert!(err.starts_with("configuration:"), "{err}");
        Ok(())
    });
}

#[test]
fn explicit_missing_file_is_an_error() {
    Jail::expect_with(|jail| {
        let err = load_err(Mode::Serve, Some(&jail.directory().join("absent.toml")));
        assert!(err.contains("absent.toml") && err.contains("does not exist"), "{err}");
        Ok(())
    });
}

#[test]
fn invalid_values_name_their_key() {
    let cases = [
        ("INFRAHUB_DATABASE__URL", "mysql://x/y", "database.url"),
        ("INFRAHUB_DATABASE__URL", "not a url", "database.url"),
        ("INFRAHUB_DATABASE__MAX_CONNECTIONS", "0", "database.max_connections"),
        ("INFRAHUB_DATABASE__MIN_CONNECTIONS", "11", "database.min_connections"),
        ("INFRAHUB_DATABASE__ACQUIRE_TIMEOUT_SECS", "0", "database.acquire_timeout_secs"),
        ("INFRAHUB_AUTH__ISSUER", "\" \"", "auth.issuer"),
        ("INFRAHUB_AUTH__TOKEN_TTL_SECS", "0", "auth.token_ttl_secs"),
        ("INFRAHUB_AUTH__LOGIN_MAX_FAILURES", "0", "auth.login_max_failures"),
        ("INFRAHUB_HTTP__BODY_LIMIT_BYTES", "10", "http.body_limit_bytes"),
        ("INFRAHUB_LOGGING__LEVEL", "info,[bad", "logging.level"),
        ("INFRAHUB_LOGGING__FORMAT", "xml", "logging.format"),
        ("INFRAHUB_WORKERS__LEASE_SECS", "1", "workers.lease_secs"),
        ("INFRAHUB_WORKERS__POLL_INTERVAL_MS", "0", "workers.poll_interval_ms"),
        ("INFRAHUB_WORKERS__KINDS__NOOP__MAX_ATTEMPTS", "0", "noop.max_attempts"),
        ("INFRAHUB_WORKERS__KINDS__NOOP__CONCURENCY", "1", "concurency"),
        ("INFRAHUB_SCHEDULE__PRUNE_JOBS", "every day", "prune_jobs"),
        ("INFRAHUB_SCHEDULE__NIGHTLY", "0 0 0 * * *", "nightly"),
        ("INFRAHUB_SCHEDULE__SERVER_SYNC", "*/15 * * * *", "server_sync"),
        ("INFRAHUB_INVENTORY__SOURCE", "ldap", "inventory.source"),
        ("INFRAHUB_INVENTORY__NETBOX__PAGE_SIZE", "5000", "inventory.netbox.page_size"),
        ("INFRAHUB_CAPACITY__CPU_OVERCOMMIT", "0", "capacity.cpu_overcommit"),
        ("INFRAHUB_DELIVERY__NAMESPACE_TEMPLATE", "{department}", "delivery.namespace_template"),
        ("INFRAHUB_DELIVERY__NAMESPACE_TEMPLATE", "Team_{name}", "delivery.namespace_template"),
        ("INFRAHUB_DELIVERY__KIND", "carrier-pigeon", "delivery.kind"),
        ("INFRAHUB_CATALOG__GOLD__HIGH__CPU", "0", "catalog"),
        ("INFRAHUB_CATALOG__GOLD__HIGH__CPU", "4294967295", "catalog"),
        ("INFRAHUB_WORKERS__RETENTION_DAYS", "0", "workers.retention_days"),
        ("INFRAHUB_WORKERS__KINDS__NOOP__MAX_ATTEMPTS", "4294967295", "noop.max_attempts"),
        ("INFRAHUB_WORKERS__KINDS__NOOP__DEADLINE_SECS", "0", "noop.deadline_secs"),
        (
            "INFRAHUB_WORKERS__KINDS__ALLOCATE_QUOTA__COALESCE_DELAY_MS",
            "60001",
            "allocate_quota.coalesce_delay_ms",
        ),
        ("INFRAHUB_DATABASE__IDLE_TIMEOUT_SECS", "0", "database.idle_timeout_secs"),
        ("INFRAHUB_AUTH__LOGIN_LOCKOUT_SECS", "0", "auth.login_lockout_secs"),
        ("INFRAHUB_AUTH__LOGIN_FAILURE_WINDOW_SECS", "0", "auth.login_failure_window_secs"),
        ("INFRAHUB_KUBERNETES__DELETE_DEADLINE_SECS", "0", "kubernetes"),
        ("INFRAHUB_WORKERS__KINDS__NOOP__TIMEOUT_SECS", "0", "noop.timeout_secs"),
        ("INFRAHUB_ARGOCD__TIMEOUT_SECS", "0", "argocd"),
        ("INFRAHUB_INVENTORY__MISSING_GUARD", "1.5", "inventory.missing_guard"),
    ];
    for (var, value, key) in cases {
        Jail::expect_with(|jail| {
            jail.set_env(var, value);
            let err = load_err(Mode::Serve, None);
            assert!(err.contains(key), "{var}={value}: {err}");
            Ok(())
        });
    }
}

#[test]
fn job_kinds_and_schedules_layer_like_everything_else() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "c.toml",
            "[workers.kinds.noop]\nconcurrency = 2\n[schedule]\nprune_jobs = \"\"\n",
        )?;
        jail.set_env("INFRAHUB_WORKERS__KINDS__NOOP__MAX_ATTEMPTS", "9");
        let config = Config::load(Mode::Serve, Some(&jail.directory().join("c.toml"))).unwrap();
        let noop = &config.workers.kinds["noop"];
        assert_eq!((noop.concurrency, noop.max_attempts), (Some(2), Some(9)));
        assert_eq!(config.schedule.entries().len(), 4, "an empty expression turns it off");
        assert_eq!(Config::default().schedule.entries().len(), 5);
        Ok(())
    });
}

#[test]
fn the_example_configuration_is_valid() {
    Jail::expect_with(|_| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/infrahub.example.toml");
        let config = Config::load(Mode::Serve, Some(&path)).expect("the example loads");
        assert_eq!(config.inventory.source, InventorySource::Netbox);
        assert_eq!(config.argocd.app_for("berlin"), Some("infrahub-berlin"));
        assert_eq!(config.argocd.app_for("munich"), None);
        Ok(())
    });
}

#[test]
fn the_packaged_configuration_is_valid() {
    Jail::expect_with(|_| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/infrahub.toml");
        let config = Config::load(Mode::Serve, Some(&path)).expect("the packaged config loads");
        assert_eq!(config.inventory.source, InventorySource::File);
        assert_eq!(
            config.auth.jwt_secret_file.as_deref(),
            Some(Path::new("/etc/infrahub/jwt-secret"))
        );
        Ok(())
    });
}

#[test]
fn a_metrics_token_is_one_or_the_other_and_long_enough() {
    Jail::expect_with(|jail| {
        jail.set_env("INFRAHUB_HTTP__METRICS_TOKEN", "short");
        let config = Config::load(Mode::Serve, None).unwrap();
        let err = config.http.metrics_token().unwrap_err().to_string();
        assert!(err.contains("at least 16"), "{err}");
        jail.create_file("token", "  a-long-enough-metrics-token \n")?;
        jail.set_env("INFRAHUB_HTTP__METRICS_TOKEN_FILE", "token");
        assert!(load_err(Mode::Serve, None).contains("not both"));
        Ok(())
    });
}

#[test]
fn netbox_needs_a_url_and_a_token() {
    Jail::expect_with(|jail| {
        jail.set_env("INFRAHUB_INVENTORY__SOURCE", "netbox");
        let err = load_err(Mode::Serve, None);
        assert!(err.contains("inventory.netbox.url"), "{err}");
        jail.set_env("INFRAHUB_INVENTORY__NETBOX__URL", "https://netbox.example");
        let err = load_err(Mode::Serve, None);
        assert!(err.contains("inventory.netbox.token"), "{err}");
        jail.set_env("INFRAHUB_INVENTORY__NETBOX__TOKEN", "nbt_abc.def");
        let config = Config::load(Mode::Serve, None).unwrap();
        assert_eq!(config.inventory.netbox.token().unwrap().expose(), "nbt_abc.def");
        assert!(!config.to_redacted_toml().contains("nbt_abc.def"));
        Ok(())
    });
}

#[test]
fn secret_and_secret_file_together_are_refused() {
    Jail::expect_with(|jail| {
        jail.set_env("INFRAHUB_AUTH__JWT_SECRET", GOOD_SECRET);
        jail.set_env("INFRAHUB_AUTH__JWT_SECRET_FILE", "/run/secret");
        let err = load_err(Mode::Serve, None);
        assert!(err.contains("not both"), "{err}");
        Ok(())
    });
}

#[test]
fn jwt_secret_missing_short_or_known_is_refused_outside_demo() {
    Jail::expect_with(|jail| {
        let config = Config::load(Mode::Serve, None).unwrap();
        let err = config.jwt_secret(Mode::Serve).unwrap_err().to_string();
        assert!(err.contains("auth.jwt_secret") && err.contains("missing"), "{err}");

        jail.set_env("INFRAHUB_AUTH__JWT_SECRET", "short-secret");
        let config = Config::load(Mode::Serve, None).unwrap();
        let err = config.jwt_secret(Mode::Serve).unwrap_err().to_string();
        assert!(err.contains("too short"), "{err}");

        jail.set_env("INFRAHUB_AUTH__JWT_SECRET", KNOWN_JWT_SECRETS[0]);
        let config = Config::load(Mode::Serve, None).unwrap();
        let err = config.jwt_secret(Mode::Serve).unwrap_err().to_string();
        assert!(err.contains("publicly known"), "{err}");
        assert!(config.jwt_secret(Mode::Demo).is_ok(), "the demo may use its own secret");

        jail.set_env("INFRAHUB_AUTH__JWT_SECRET", GOOD_SECRET);
        let config = Config::load(Mode::Serve, None).unwrap();
        assert_eq!(config.jwt_secret(Mode::Serve).unwrap().expose(), GOOD_SECRET);
        Ok(())
    });
}

#[test]
fn jwt_secret_file_is_read_and_trimmed() {
    Jail::expect_with(|jail| {
        jail.create_file("jwt", &format!("{GOOD_SECRET}\n"))?;
        jail.set_env("INFRAHUB_AUTH__JWT_SECRET_FILE", jail.directory().join("jwt").display());
        let config = Config::load(Mode::Serve, None).unwrap();
        assert_eq!(config.jwt_secret(Mode::Serve).unwrap().expose(), GOOD_SECRET);

        jail.set_env("INFRAHUB_AUTH__JWT_SECRET_FILE", jail.directory().join("nope").display());
        let config = Config::load(Mode::Serve, None).unwrap();
        let err = config.jwt_secret(Mode::Serve).unwrap_err().to_string();
        assert!(err.contains("auth.jwt_secret_file") && err.contains("cannot read"), "{err}");
        Ok(())
    });
}

#[test]
fn demo_mode_uses_embedded_demo_config() {
    Jail::expect_with(|_| {
        let config = Config::load(Mode::Demo, None).expect("demo config loads");
        assert!(config.database.url.ends_with("/infrahub_demo"), "{}", config.database.url);
        assert!(config.jwt_secret(Mode::Demo).is_ok());
        assert!(config.jwt_secret(Mode::Serve).is_err());
        // The built-in catalog, except that gold needs approval there.
        let mut expected = Catalog::default();
        for entry in expected.0.get_mut("gold").unwrap().values_mut() {
            entry.requires_approval = true;
        }
        assert_eq!(config.catalog, expected);
        assert_eq!(config.approval.expire_after_secs, 3600);
        Ok(())
    });
}

#[test]
fn scheduled_deletions_and_approvals_need_the_reconciler() {
    Jail::expect_with(|jail| {
        jail.set_env("INFRAHUB_SCHEDULE__RECONCILE", "");
        let err = load_err(Mode::Demo, None);
        assert!(err.contains("schedule.reconcile") && err.contains("grace_secs"), "{err}");
        jail.set_env("INFRAHUB_DELETION__GRACE_SECS", "0");
        let err = load_err(Mode::Demo, None);
        assert!(err.contains("need approval"), "the demo's gold needs approval: {err}");
        Ok(())
    });
}

#[test]
fn approval_expiry_is_bounded() {
    Jail::expect_with(|jail| {
        jail.set_env("INFRAHUB_APPROVAL__EXPIRE_AFTER_SECS", "5");
        assert!(load_err(Mode::Demo, None).contains("approval.expire_after_secs"));
        jail.set_env("INFRAHUB_APPROVAL__EXPIRE_AFTER_SECS", "600");
        jail.set_env("INFRAHUB_APPROVAL__CPU_ABOVE", "32");
        let config = Config::load(Mode::Demo, None).unwrap();
        assert_eq!((config.approval.expire_after_secs, config.approval.cpu_above), (600, Some(32)));
        Ok(())
    });
}

#[test]
fn redacted_output_hides_secrets() {
    Jail::expect_with(|jail| {
        jail.set_env("INFRAHUB_AUTH__JWT_SECRET", GOOD_SECRET);
        jail.set_env(
            "INFRAHUB_DATABASE__URL",
            "postgres://app:hunter2hunter2@db.internal/infrahub",
        );
        jail.set_env(
            "INFRAHUB_DELIVERY__GIT__REMOTE",
            "https://oauth2:glpat-remote-token@gitlab.example/ops.git",
        );
        let config = Config::load(Mode::Serve, None).unwrap();
        let text = config.to_redacted_toml();
        assert!(!text.contains("glpat-remote-token"), "{text}");
        assert!(text.contains("https://[redacted]@gitlab.example/ops.git"), "{text}");
        assert!(!text.contains(GOOD_SECRET), "{text}");
        assert!(!text.contains("hunter2hunter2"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
        assert!(text.contains("db.internal"), "{text}");
        let debug = format!("{config:?}");
        assert!(!debug.contains(GOOD_SECRET) && !debug.contains("hunter2hunter2"), "{debug}");
        assert!(!debug.contains("glpat-remote-token"), "{debug}");
        Ok(())
    });
}

/// A TOML document with its commented-out keys and tables uncommented.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|line| {
            let bare = line.strip_prefix("# ").unwrap_or(line);
            let is_key = bare.split_once(" = ").is_some_and(|(key, _)| {
                !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            });
            if line.starts_with("# [") || (line.starts_with("# ") && is_key) { bare } else { line }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The keys of a TOML document, dotted.
fn example_keys(text: &str) -> Vec<String> {
    let value: toml::Value = toml::from_str(text).expect("the uncommented example parses");
    let mut keys = Vec::new();
    let mut stack = vec![(String::new(), value)];
    while let Some((prefix, value)) = stack.pop() {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table {
                    let path = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
                    stack.push((path, value));
                }
            }
            _ => keys.push(prefix),
        }
    }
    keys.sort();
    keys
}

/// The keys docs/CONFIG.md documents: the first cell of each table row, where a bare name
/// after a full key shares its section (`inventory.netbox.token`, `token_file`).
fn documented_keys(text: &str) -> Vec<Vec<String>> {
    let mut keys = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let cell = line.split('|').nth(1).unwrap_or("");
        let mut section = String::new();
        for name in cell.split('`').skip(1).step_by(2) {
            let full = match name.rsplit_once('.') {
                Some((prefix, _)) => {
                    section = prefix.to_owned();
                    name.to_owned()
                }
                None => format!("{section}.{name}"),
            };
            keys.push(full.split('.').map(str::to_owned).collect());
        }
    }
    keys
}

#[test]
fn every_key_of_the_example_configuration_is_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("config/infrahub.example.toml")).unwrap();
    let doc = std::fs::read_to_string(root.join("docs/CONFIG.md")).unwrap();
    let documented = documented_keys(&doc);
    assert!(documented.len() > 50, "{documented:?}");
    let example = uncommented(&example);
    // Commented-out keys are real keys too: the whole example is a configuration.
    toml::from_str::<Config>(&example).expect("the uncommented example is a valid configuration");
    let keys = example_keys(&example);
    assert!(keys.len() > 60, "{keys:?}");
    assert!(keys.contains(&"workers.kinds.noop.deadline_secs".to_owned()), "commented keys count");
    // A key is documented by a row naming it, or a prefix of it; `<name>` stands for any part.
    let covers = |pattern: &Vec<String>, key: &str| {
        let parts: Vec<&str> = key.split('.').collect();
        pattern.len() >= 2
            && pattern.len() <= parts.len()
            && pattern.iter().zip(&parts).all(|(p, k)| p == k || p.starts_with('<'))
    };
    let undocumented: Vec<&String> =
        keys.iter().filter(|key| !documented.iter().any(|p| covers(p, key))).collect();
    assert!(undocumented.is_empty(), "not in docs/CONFIG.md: {undocumented:?}");
}

#[test]
fn the_clients_variables_are_not_configuration_keys() {
    Jail::expect_with(|jail| {
        jail.set_env("INFRAHUB_URL", "http://ops-1:8000");
        jail.set_env("INFRAHUB_TOKEN", "a-token");
        jail.set_env("INFRAHUB_OUTPUT", "json");
        jail.set_env("INFRAHUB_HTTP__LISTEN", "127.0.0.1:9100");
        let config = Config::load(Mode::Serve, None).expect("the client's variables are ignored");
        assert_eq!(config.http.listen.port(), 9100);
        jail.set_env("INFRAHUB_URLS", "x");
        assert!(load_err(Mode::Serve, None).contains("urls"), "other unknown keys still fail");
        Ok(())
    });
}
