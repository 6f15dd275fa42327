//! Request extractors whose rejections speak the API's error format.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use lambda_core::CacheControl;
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
                    // Reading stopped mid-body: this connection is done.
                    ApiError::payload_too_large("request body is over its size limit").with_header(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    )
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

/// The required `Language-Title` header.
pub fn language_title_header(headers: &HeaderMap) -> Result<String, ApiError> {
    match headers.get("language-title").map(|value| value.to_str()) {
        Some(Ok(value)) if !value.trim().is_empty() => Ok(value.to_string()),
        Some(Err(_)) => Err(ApiError::invalid_request(
            "header Language-Title is not valid text",
        )),
        _ => Err(ApiError::invalid_request(
            "the Language-Title header is required, e.g. Language-Title: nodejs-calculator",
        )),
    }
}

/// The optional `X-Cache-Control` header of an execute, read in place (the
/// `HeaderMap` extractor would copy every header). Never rejects: the
/// handler reads the body before it answers with this header's error.
pub struct CacheControlHeader(pub Result<CacheControl, ApiError>);

impl<S: Send + Sync> FromRequestParts<S> for CacheControlHeader {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        let cache = match parts
            .headers
            .get("x-cache-control")
            .map(|value| value.to_str())
        {
            None => Ok(CacheControl::Default),
            Some(Ok(text)) => CacheControl::parse(text).ok_or_else(|| {
                ApiError::invalid_request("X-Cache-Control must be no-cache or max-age=<seconds>")
            }),
            Some(Err(_)) => Err(ApiError::invalid_request(
                "header X-Cache-Control is not valid text",
            )),
        };
        Ok(CacheControlHeader(cache))
    }
}
