//! The API's OpenAPI 3.1 document, served at `/openapi.json`.
//!
//! The paths come from the handlers' `#[utoipa::path]` annotations, collected as the routes are
//! registered (`super::documented_routes`). This module adds what no handler knows: the info,
//! the tags, the bearer scheme, and the answers of the token check and the body read. Its tests
//! pin the document to the routes the API serves.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};

use super::BODY_LIMIT;
use super::error::ErrorBody;

/// The document's info, tags and bearer scheme; the paths come from the routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Hookgate admin API",
        version = env!("CARGO_PKG_VERSION"),
        description = API_DESCRIPTION,
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody)),
    tags(
        (name = "events", description = "Publish events and read them back"),
        (name = "deliveries", description = "An event bound for one endpoint: status, attempts, \
            retry, replay"),
        (name = "endpoints", description = "Receivers of webhooks: create, change, rotate secrets, \
            recover"),
        (name = "plugins", description = "WebAssembly filters and transforms: upload, delete, \
            dry-run"),
        (name = "payments", description = "On-chain payments the gateway watches for"),
        (name = "operations", description = "Health, readiness and metrics"),
    ),
)]
pub(super) struct ApiDoc;

const API_DESCRIPTION: &str = "The admin API of a Hookgate webhook gateway.\n\n\
**Authentication**: every `/v1/` route needs `Authorization: Bearer <token>`, the token being \
`server.admin_token` from the config file; a missing or wrong token gets 401. `/healthz` and \
`/openapi.json` are open, and `/readyz` and `/metrics` too unless `server.probes_need_token` \
is set.\n\n\
**Errors**: every error answer is JSON, `{\"error\": {\"code\", \"message\"}}` \
(`ErrorBody`): `code` is stable, for programs (`invalid_body`, `unauthorized`, `not_found`, \
`idempotency_conflict`, ...); `message` says what happened and what to do. Any route may \
also answer 500 (`internal` or `store_error`) on an unexpected failure.";

/// Adds the `bearer` scheme (the admin token) to the components.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
    }
}

/// Documents what the token check and the body read add to each operation behind them: the
/// bearer security, 401, and for operations that take a body, 408 and 413. Called on the
/// routes `documented_routes` puts behind those layers, rather than written on each handler,
/// so the document follows the layering (the probes are behind it only with
/// `probes_need_token`).
pub(super) fn document_protection(openapi: &mut OpenApi) {
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    let unauthorized = error("`unauthorized`: the bearer token is missing or wrong");
    let timeout = error("`body_timeout`: the request body did not arrive in time");
    let too_large = error(&format!(
        "`too_large`: the request body is over {} MiB",
        BODY_LIMIT / (1024 * 1024)
    ));
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            operation.security = Some(vec![SecurityRequirement::new(
                "bearer",
                Vec::<String>::new(),
            )]);
            let responses = &mut operation.responses.responses;
            responses.insert("401".to_owned(), unauthorized.clone().into());
            if operation.request_body.is_some() {
                responses
                    .entry("408".to_owned())
                    .or_insert_with(|| timeout.clone().into());
                responses
                    .entry("413".to_owned())
                    .or_insert_with(|| too_large.clone().into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::{Value, json};
    use utoipa::openapi::path::{Operation, PathItem};

    use super::*;
    use crate::admin::documented_routes;

    /// Every route the API serves besides `/openapi.json`, as `router` registers it.
    const ROUTES: &[(&str, &str)] = &[
        ("POST", "/v1/events"),
        ("GET", "/v1/events"),
        ("GET", "/v1/events/{id}"),
        ("POST", "/v1/events/{id}/resend"),
        ("POST", "/v1/events/batch"),
        ("GET", "/v1/deliveries"),
        ("GET", "/v1/deliveries/{id}"),
        ("POST", "/v1/deliveries/{id}/replay"),
        ("POST", "/v1/deliveries/{id}/retry"),
        ("GET", "/v1/endpoints"),
        ("POST", "/v1/endpoints"),
        ("GET", "/v1/endpoints/{id}"),
        ("PATCH", "/v1/endpoints/{id}"),
        ("DELETE", "/v1/endpoints/{id}"),
        ("POST", "/v1/endpoints/{id}/enable"),
        ("POST", "/v1/endpoints/{id}/rotate-secret"),
        ("POST", "/v1/endpoints/{id}/test"),
        ("POST", "/v1/endpoints/{id}/recover"),
        ("GET", "/v1/plugins"),
        ("PUT", "/v1/plugins/{name}"),
        ("DELETE", "/v1/plugins/{name}"),
        ("POST", "/v1/plugins/{name}/test"),
        ("POST", "/v1/payments"),
        ("GET", "/v1/payments"),
        ("GET", "/v1/payments/{id}"),
        ("POST", "/v1/payments/{id}/cancel"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
    ];

    /// The document `router` serves, for either probe setting.
    fn document(probes_need_token: bool) -> OpenApi {
        documented_routes(BODY_LIMIT, probes_need_token, |protected| protected).into_openapi()
    }

    fn operations(item: &PathItem) -> Vec<(&'static str, &Operation)> {
        let methods = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
            ("HEAD", &item.head),
            ("OPTIONS", &item.options),
            ("TRACE", &item.trace),
        ];
        methods
            .into_iter()
            .filter_map(|(method, operation)| {
                operation.as_ref().map(|operation| (method, operation))
            })
            .collect()
    }

    /// Every operation in `document` by `(method, path)`.
    fn by_route(document: &OpenApi) -> BTreeMap<(&'static str, String), &Operation> {
        document
            .paths
            .paths
            .iter()
            .flat_map(|(path, item)| {
                operations(item)
                    .into_iter()
                    .map(move |(method, operation)| ((method, path.clone()), operation))
            })
            .collect()
    }

    #[test]
    fn the_document_lists_exactly_the_routes_the_api_serves() {
        let expected: BTreeSet<(&str, String)> = ROUTES
            .iter()
            .map(|(method, path)| (*method, (*path).to_owned()))
            .collect();
        assert_eq!(expected.len(), ROUTES.len(), "a route is listed twice");
        for probes_need_token in [false, true] {
            let listed: BTreeSet<_> = by_route(&document(probes_need_token)).into_keys().collect();
            assert_eq!(listed, expected, "probes_need_token = {probes_need_token}");
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_api_info_and_the_bearer_scheme() {
        let text = document(false).to_json().unwrap();
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        assert_eq!(json["info"]["title"], "Hookgate admin API");
        assert_eq!(json["info"]["version"], env!("CARGO_PKG_VERSION"));
        let description = json["info"]["description"].as_str().unwrap();
        assert!(description.contains("server.admin_token"), "{description}");
        assert!(description.contains("ErrorBody"), "{description}");
        assert_eq!(
            json["components"]["securitySchemes"]["bearer"],
            json!({"type": "http", "scheme": "bearer"})
        );
    }

    #[test]
    fn every_operation_has_a_unique_id_a_tag_a_summary_and_a_success() {
        let document = document(false);
        let mut ids = BTreeSet::new();
        for ((method, path), operation) in by_route(&document) {
            let route = format!("{method} {path}");
            let id = operation.operation_id.as_deref().unwrap_or_default();
            assert!(!id.is_empty(), "{route} has no operation_id");
            assert!(
                ids.insert(id.to_owned()),
                "{route}: operation_id `{id}` is taken"
            );
            assert!(
                operation.tags.as_ref().is_some_and(|tags| tags.len() == 1),
                "{route} needs one tag"
            );
            assert!(
                operation
                    .summary
                    .as_ref()
                    .is_some_and(|summary| !summary.is_empty()),
                "{route} has no summary (the handler's doc comment)"
            );
            let statuses: Vec<&String> = operation.responses.responses.keys().collect();
            assert!(
                statuses.iter().any(|status| status.starts_with('2')),
                "{route} documents no success: {statuses:?}"
            );
            if path.contains('{') {
                let parameters = operation.parameters.as_deref().unwrap_or_default();
                assert!(
                    !parameters.is_empty(),
                    "{route} does not document its path parameter"
                );
            }
        }
    }

    #[test]
    fn protected_operations_need_the_bearer_token_and_document_the_401() {
        for probes_need_token in [false, true] {
            let document = document(probes_need_token);
            for ((method, path), operation) in by_route(&document) {
                let protected = path.starts_with("/v1/")
                    || (probes_need_token && (path == "/readyz" || path == "/metrics"));
                let route = format!("{method} {path} (probes_need_token = {probes_need_token})");
                let security = serde_json::to_value(&operation.security).unwrap();
                let unauthorized = operation.responses.responses.contains_key("401");
                if protected {
                    assert_eq!(security, json!([{"bearer": []}]), "{route}");
                    assert!(unauthorized, "{route} does not document its 401");
                } else {
                    assert_eq!(security, Value::Null, "{route} is open");
                    assert!(!unauthorized, "{route} is open but documents a 401");
                }
            }
        }
    }

    #[test]
    fn every_schema_reference_names_a_component() {
        let json: Value = serde_json::from_str(&document(false).to_json().unwrap()).unwrap();
        let mut references = Vec::new();
        collect_references(&json, &mut references);
        assert!(!references.is_empty());
        for reference in references {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected reference {reference}"));
            assert!(
                json["components"]["schemas"][name].is_object(),
                "{reference} is not in the components"
            );
        }
    }

    fn collect_references(value: &Value, references: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("$ref", Value::String(reference)) => references.push(reference.clone()),
                        _ => collect_references(value, references),
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    collect_references(item, references);
                }
            }
            _ => {}
        }
    }
}
