//! The OpenAPI document, generated from the route table so it cannot drift from it.

use std::sync::OnceLock;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::build_info;
use crate::http::routes::{Access, ROUTES};
use crate::http::{Response, response};

pub fn document() -> Response {
    static DOCUMENT: OnceLock<Bytes> = OnceLock::new();
    let body = DOCUMENT.get_or_init(|| Bytes::from(serde_json::to_vec(&build()).expect("json")));
    response::bytes(StatusCode::OK, "application/json", body.clone())
}

fn build() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let template = route.path.replace("{*", "{");
        let mut operation = json!({
            "summary": route.summary,
            "operationId": format!("{:?}", route.id),
            "responses": {
                "default": {
                    "description": "An error",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                }
            }
        });
        let parameters: Vec<Value> = template
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        operation["responses"]["200"] = json!({"description": "Success"});
        if route.access == Access::Public {
            operation["security"] = json!([]);
        }
        paths
            .entry(template)
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .expect("object")
            .insert(route.method.as_str().to_ascii_lowercase(), operation);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "cairn", "version": build_info::VERSION},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "code"],
                    "properties": {"error": {"type": "string"}, "code": {"type": "string"}}
                }
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"bearer": []}]
    })
}
