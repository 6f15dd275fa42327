//! Request extractors whose rejections speak the API's error format.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body. Every field of our bodies is optional, so an empty body is
/// the default value; a body over the route's limit is 413 (the limit is
/// enforced while reading, so an oversized body is never buffered whole).
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::payload_too_large("request body is over its size limit")
                } else {
                    ApiError::invalid_request(format!("cannot read the request body: {rejection}"))
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|error| ApiError::invalid_request(format!("malformed JSON body: {error}")))
    }
}

/// An optional header as text; a value that is not visible ASCII is 400.
pub fn header_text(parts: &Parts, name: &str) -> Result<Option<String>, ApiError> {
    match parts.headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|text| Some(text.to_string()))
            .map_err(|_| ApiError::invalid_request(format!("header {name} is not valid text"))),
    }
}

/// The `Language-Title` header, required.
pub struct LanguageTitleHeader(pub String);

impl<S: Send + Sync> FromRequestParts<S> for LanguageTitleHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match header_text(parts, "language-title")? {
            Some(value) if !value.trim().is_empty() => Ok(LanguageTitleHeader(value)),
            _ => Err(ApiError::invalid_request(
                "the Language-Title header is required, e.g. Language-Title: nodejs-calculator",
            )),
        }
    }
}
