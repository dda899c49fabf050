//! A small HTTP/JSON client for the server's HTTP API (hyper, already in the tree), and a
//! checker of answers against the server's own OpenAPI document.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub struct HttpAnswer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl HttpAnswer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct HttpApi {
    base: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl HttpApi {
    /// An HTTP/1.1 client, as browsers use for `http://`.
    pub fn new(base: String) -> HttpApi {
        HttpApi {
            base,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// An HTTP/2 client (prior knowledge): a server may answer before it reads a body.
    pub fn new_h2(base: String) -> HttpApi {
        HttpApi {
            base,
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    /// Sends a request; `token` empty sends no `Authorization`.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> HttpAnswer {
        let authorization = format!("Bearer {token}");
        let mut headers = Vec::new();
        if !token.is_empty() {
            headers.push(("authorization", authorization.as_str()));
        }
        if let Some(content_type) = content_type {
            headers.push(("content-type", content_type));
        }
        self.send_with(method, path, &headers, body).await
    }

    /// Sends a request with the given headers (cookies, Origin, ...).
    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> HttpAnswer {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body))).unwrap();
        let response = self.client.request(request).await.expect("HTTP request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("HTTP body")
            .to_bytes();
        HttpAnswer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> HttpAnswer {
        self.send("GET", path, token, None, Vec::new()).await
    }

    pub async fn json(&self, method: &str, path: &str, token: &str, body: Value) -> HttpAnswer {
        self.send(
            method,
            path,
            token,
            Some("application/json"),
            serde_json::to_vec(&body).unwrap(),
        )
        .await
    }
}

/// The server's OpenAPI document, to check answers against.
pub struct OpenApi(pub Value);

impl OpenApi {
    /// Checks `answer` against what the document says `method` on `template` answers with
    /// its status (or the status class, "4XX"). Panics with the path of the first mismatch.
    pub fn check(&self, method: &str, template: &str, answer: &HttpAnswer) {
        let operation = &self.0["paths"][template][method.to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {template} is not in the OpenAPI document"
        );
        let status = answer.status.to_string();
        let class = format!("{}XX", &status[..1]);
        let response = [&status, &class]
            .into_iter()
            .map(|key| &operation["responses"][key.as_str()])
            .find(|response| response.is_object())
            .unwrap_or_else(|| panic!("{method} {template}: status {status} is not documented"));
        let content_type = answer
            .headers
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .to_string();
        let schema = &response["content"][&content_type]["schema"];
        assert!(
            schema.is_object(),
            "{method} {template} {status}: content type {content_type:?} is not documented"
        );
        if content_type == "application/x-ndjson" {
            for line in answer.text().lines() {
                let value: Value = serde_json::from_str(line).expect("an NDJSON line");
                self.validate(schema, &value, &format!("{method} {template} line"));
            }
        } else {
            self.validate(schema, &answer.json(), &format!("{method} {template}"));
        }
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str() {
            Some(reference) => {
                let name = reference
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("unsupported $ref {reference}"));
                let target = &self.0["components"]["schemas"][name];
                assert!(target.is_object(), "dangling $ref {reference}");
                self.resolve(target)
            }
            None => schema,
        }
    }

    /// Whether `value` matches `schema`; panics naming `at` when it does not.
    pub fn validate(&self, schema: &Value, value: &Value, at: &str) {
        if let Err(mismatch) = self.matches(schema, value, at) {
            panic!("{mismatch}\nvalue: {value}");
        }
    }

    fn matches(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let schema = self.resolve(schema);
        for key in ["oneOf", "anyOf"] {
            if let Some(choices) = schema[key].as_array() {
                let matching = choices
                    .iter()
                    .filter(|choice| self.matches(choice, value, at).is_ok())
                    .count();
                let fits = if key == "oneOf" {
                    matching == 1
                } else {
                    matching >= 1
                };
                return if fits {
                    Ok(())
                } else {
                    Err(format!("{at}: {matching} of the {key} choices match"))
                };
            }
        }
        if let Some(parts) = schema["allOf"].as_array() {
            for part in parts {
                self.matches(part, value, at)?;
            }
            return Ok(());
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.is_empty() {
            let actual = match value {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            let fits =
                types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
            if !fits {
                return Err(format!("{at}: expected {types:?}, found {actual}"));
            }
        }
        if let Some(allowed) = schema["enum"].as_array() {
            if !allowed.contains(value) {
                return Err(format!("{at}: {value} is not one of {allowed:?}"));
            }
        }
        match value {
            Value::String(text) if schema["format"] == "date-time" => {
                chrono::DateTime::parse_from_rfc3339(text)
                    .map_err(|_| format!("{at}: {text:?} is not an RFC 3339 time"))?;
            }
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.matches(item_schema, item, &format!("{at}[{i}]"))?;
                    }
                }
            }
            Value::Object(fields) => {
                let properties = schema["properties"].as_object();
                for required in schema["required"].as_array().into_iter().flatten() {
                    let name = required.as_str().unwrap_or_default();
                    if !fields.contains_key(name) {
                        return Err(format!("{at}: required field {name} is missing"));
                    }
                }
                for (name, field) in fields {
                    let field_at = format!("{at}.{name}");
                    match properties.and_then(|properties| properties.get(name)) {
                        Some(field_schema) => self.matches(field_schema, field, &field_at)?,
                        None => match schema.get("additionalProperties") {
                            Some(Value::Bool(false)) | None if properties.is_some() => {
                                return Err(format!("{field_at} is not documented"))
                            }
                            Some(extra) if extra.is_object() => {
                                self.matches(extra, field, &field_at)?
                            }
                            _ => {}
                        },
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}
