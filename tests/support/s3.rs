//! The code store config for the test S3 server, under a fresh prefix.

#![allow(dead_code)]

use nubis::config::CodeStoreConfig;

pub fn config() -> CodeStoreConfig {
    let endpoint = std::env::var("NUBIS_TEST_S3_ENDPOINT").expect(
        "NUBIS_TEST_S3_ENDPOINT is not set: start the S3 server with `bash scripts/test-services.sh start s3` \
         and `eval \"$(bash scripts/test-services.sh env)\"`",
    );
    let bucket = std::env::var("NUBIS_TEST_S3_BUCKET").unwrap_or_else(|_| "nubis-code".into());
    CodeStoreConfig {
        url: format!("s3://{bucket}/test-{}", uuid::Uuid::new_v4().simple()),
        endpoint,
        region: "us-east-1".into(),
        // moto accepts any key; real credentials are not needed, but some are.
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
        allow_http: true,
        virtual_hosted_style: false,
        timeout_secs: 10,
    }
}
