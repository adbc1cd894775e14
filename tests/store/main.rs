//! Conformance suite of the metadata store: every test body below runs unchanged on SQLite,
//! PostgreSQL and MySQL/MariaDB (`sqlite::`, `postgres::`, `mysql::`), each time on a database
//! of its own (a temp dir, or a fresh database created on the shared server), so tests are
//! independent and run in parallel.
//!
//! PostgreSQL and MariaDB come from `scripts/test-services.sh start postgres mariadb`
//! (`NUBIS_TEST_POSTGRES_URL`, `NUBIS_TEST_MYSQL_URL`; `scripts/test.sh` starts them). As with
//! the Kafka tests, a missing URL fails the test: a suite that skipped would pass without
//! having tested anything.

mod harness;

mod async_tasks;
mod functions;
mod keys;
mod migrate;
mod outage;
mod refusals;
mod scaling;
mod timers;
mod triggers;
mod versions;

/// One `#[tokio::test]` per (engine, body): `<engine>::<body>`.
macro_rules! conformance {
    ($($module:ident :: $test:ident),* $(,)?) => {
        conformance!(@engine sqlite, Sqlite, $($module::$test),*);
        conformance!(@engine postgres, Postgres, $($module::$test),*);
        conformance!(@engine mysql, MySql, $($module::$test),*);
    };
    (@engine $engine:ident, $variant:ident, $($module:ident :: $test:ident),*) => {
        mod $engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let db = crate::harness::TestDb::fresh(nubis::store::Engine::$variant).await;
                    crate::$module::$test(&db).await;
                    db.remove().await;
                }
            )*
        }
    };
}

conformance!(
    functions::function_crud_and_optimistic_updates,
    functions::function_names_are_unique_and_case_sensitive,
    functions::functions_page_by_prefix_in_code_point_order,
    functions::code_references_count_sharing_functions,
    keys::access_keys_insert_get_count,
    keys::console_sessions_insert_get_expire,
    async_tasks::insert_get_and_duplicates,
    async_tasks::list_filters_and_pages_both_ways,
    async_tasks::transitions_are_guarded_and_recorded,
    async_tasks::transitions_can_require_an_unchanged_history,
    async_tasks::concurrent_transitions_lose_no_event,
    async_tasks::configs_upsert_list_delete,
    async_tasks::delete_function_state_and_counts,
    versions::versions_publish_freeze_list_and_never_reuse_ids,
    versions::aliases_route_to_versions_that_cannot_go_away,
    versions::versions_hold_code_and_go_with_their_function,
    versions::resolve_names_latest_versions_and_aliases,
    versions::concurrent_publishes_take_one_id,
    scaling::controls_are_stored_without_a_new_revision,
    scaling::concurrency_configs_list_and_page,
    scaling::provision_configs_upsert_page_and_follow_aliases,
    scaling::alias_deletes_racing_provision_puts_leave_no_orphan,
    triggers::triggers_crud_keep_the_config_verbatim,
    triggers::one_http_trigger_per_qualifier,
    triggers::triggers_page_and_scan_by_type,
    timers::timer_ticks_move_forward_only,
    migrate::concurrent_opens_migrate_once,
    migrate::reopening_keeps_the_data,
);
