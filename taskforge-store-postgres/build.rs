//! Compiles the PostgreSQL tests only where `TASKFORGE_PG_URL` names a
//! server: elsewhere (a newcomer's machine without PostgreSQL) the test
//! suite passes and says, once, how to run them.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(taskforge_pg)");
    println!("cargo::rerun-if-env-changed=TASKFORGE_PG_URL");
    if std::env::var_os("TASKFORGE_PG_URL").is_some_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=taskforge_pg");
    }
}
