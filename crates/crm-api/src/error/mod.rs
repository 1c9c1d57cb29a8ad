//! The one error type of the HTTP layer and its one mapping to RFC 9457 problem details.
//!
//! Handlers return [`ApiError`]; store errors, poem's routing errors and poem-openapi's
//! parameter errors all become one too (`From<StoreError>`, [`ApiError::from_poem`]), so
//! every error a client sees is `application/problem+json` with a stable `code`.

use std::{error::Error as StdError, fmt::Write as _};

use crm_core::{StoreError, error_chain};
use poem::{Response, error::ResponseError, http::StatusCode};
use poem_openapi::{
    Enum, Object,
    error::{ContentTypeError, ParseParamError, ParsePathError, ParseRequestPayloadError},
    types::ToJSON,
};

mod declared;

#[cfg(test)]
use declared::STATUSES;
pub(crate) use declared::{ApiResult, declare};

/// The media type of every error body.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// A stable, machine-readable error code; the problem's `type` is `/problems/<code>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub(crate) enum ErrorCode {
    /// 400: the body is not valid JSON.
    MalformedJson,
    /// 400: the request is malformed in another way (e.g. an unreadable body).
    BadRequest,
    /// 401: missing, unknown or revoked credentials.
    Unauthorized,
    /// 403: the credentials may not do this.
    Forbidden,
    /// 404: the path, or an entity it names, does not exist.
    NotFound,
    /// 405: the path exists, the method does not.
    MethodNotAllowed,
    /// 409: another source already has this code.
    SourceCodeTaken,
    /// 409: the operator still has contacts.
    OperatorHasContacts,
    /// 409: the source still has contacts.
    SourceHasContacts,
    /// 409: the contact is closed.
    ContactClosed,
    /// 409: the operator is inactive.
    OperatorInactive,
    /// 409: the operator has reached its limit of open contacts.
    OperatorAtCapacity,
    /// 413: the body is larger than 1 MiB.
    PayloadTooLarge,
    /// 415: the body is not declared as JSON.
    UnsupportedMediaType,
    /// 422: fields, parameters or path ids are missing, of the wrong type or out of range.
    ValidationFailed,
    /// 422: the `Idempotency-Key` came before with a different request.
    IdempotencyKeyReused,
    /// 500: a bug; the cause is logged, not shown.
    Internal,
    /// 503: too much work is queued; retry after `Retry-After` seconds.
    Overloaded,
    /// 503: the database does not answer.
    Unavailable,
}

/// An RFC 9457 problem details body.
#[derive(Debug, Object)]
#[oai(rename = "Problem")]
pub(crate) struct ProblemBody {
    /// `/problems/<code>`, a relative URI documented in docs/errors.md.
    #[oai(rename = "type")]
    ty: String,
    /// A short summary of the kind of problem.
    title: String,
    /// The HTTP status code.
    status: u16,
    /// What went wrong in this occurrence.
    detail: String,
    // A stable, machine-readable code. Not a doc comment: poem-openapi would wrap the
    // reference in an `allOf` to carry it, and client generators drop the whole schema
    // for that (the enum's own description says it).
    code: ErrorCode,
    /// The offending fields, for `validation_failed`.
    #[oai(skip_serializing_if_is_none)]
    errors: Option<Vec<FieldError>>,
}

/// One offending field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub(crate) struct FieldError {
    /// Where the field is: `name`, `operators[1].weight`, or a query or path parameter.
    pub(crate) field: String,
    /// What is wrong with it.
    pub(crate) message: String,
}

/// An error answered to the client as a problem details body.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub(crate) struct ApiError {
    code: ErrorCode,
    detail: String,
    errors: Vec<FieldError>,
}

impl ErrorCode {
    /// Code (as in bodies and in the `type` URI), status and title.
    const fn describe(self) -> (&'static str, StatusCode, &'static str) {
        match self {
            Self::MalformedJson => ("malformed_json", StatusCode::BAD_REQUEST, "Malformed JSON"),
            Self::BadRequest => ("bad_request", StatusCode::BAD_REQUEST, "Bad request"),
            Self::Unauthorized => ("unauthorized", StatusCode::UNAUTHORIZED, "Unauthorized"),
            Self::Forbidden => ("forbidden", StatusCode::FORBIDDEN, "Forbidden"),
            Self::NotFound => ("not_found", StatusCode::NOT_FOUND, "Not found"),
            Self::MethodNotAllowed => (
                "method_not_allowed",
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
            ),
            Self::SourceCodeTaken => (
                "source_code_taken",
                StatusCode::CONFLICT,
                "Source code taken",
            ),
            Self::OperatorHasContacts => (
                "operator_has_contacts",
                StatusCode::CONFLICT,
                "Operator has contacts",
            ),
            Self::SourceHasContacts => (
                "source_has_contacts",
                StatusCode::CONFLICT,
                "Source has contacts",
            ),
            Self::ContactClosed => ("contact_closed", StatusCode::CONFLICT, "Contact closed"),
            Self::OperatorInactive => (
                "operator_inactive",
                StatusCode::CONFLICT,
                "Operator inactive",
            ),
            Self::OperatorAtCapacity => (
                "operator_at_capacity",
                StatusCode::CONFLICT,
                "Operator at capacity",
            ),
            Self::PayloadTooLarge => (
                "payload_too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload too large",
            ),
            Self::UnsupportedMediaType => (
                "unsupported_media_type",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
            ),
            Self::ValidationFailed => (
                "validation_failed",
                StatusCode::UNPROCESSABLE_ENTITY,
                "Validation failed",
            ),
            Self::IdempotencyKeyReused => (
                "idempotency_key_reused",
                StatusCode::UNPROCESSABLE_ENTITY,
                "Idempotency key reused",
            ),
            Self::Internal => (
                "internal",
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
            ),
            Self::Overloaded => ("overloaded", StatusCode::SERVICE_UNAVAILABLE, "Overloaded"),
            Self::Unavailable => (
                "unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
            ),
        }
    }
}

impl ApiError {
    /// An error with a code and a human-readable detail.
    pub(crate) fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// 422 naming the offending fields.
    pub(crate) fn validation(errors: Vec<FieldError>) -> Self {
        let mut detail = String::from("the request is invalid:");
        for (i, e) in errors.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            let _ = write!(detail, "{sep}{}: {}", e.field, e.message);
        }
        Self {
            errors,
            ..Self::new(ErrorCode::ValidationFailed, detail)
        }
    }

    /// 422 for one field.
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    /// 500: logs the cause and answers without it.
    pub(crate) fn internal(context: &str, cause: &(dyn StdError + 'static)) -> Self {
        tracing::error!(error = %error_chain(cause), "{context}");
        Self::new(
            ErrorCode::Internal,
            "the server failed to handle the request",
        )
    }

    /// The code of this error.
    #[cfg(test)]
    pub(crate) const fn code(&self) -> ErrorCode {
        self.code
    }

    /// The offending fields of a 422.
    #[cfg(test)]
    pub(crate) fn field_errors(&self) -> &[FieldError] {
        &self.errors
    }

    /// Maps any error poem or poem-openapi produced before or around a handler: a handler's
    /// own [`ApiError`] passes through unchanged.
    pub(crate) fn from_poem(err: poem::Error) -> Self {
        let err = match err.downcast::<Self>() {
            Ok(err) => return err,
            Err(err) => err,
        };
        if let Some(e) = err.downcast_ref::<ParseParamError>() {
            return Self::invalid(e.name, param_message(e.name, &e.reason));
        }
        if let Some(e) = err.downcast_ref::<ParsePathError>() {
            // poem-openapi names path parameters by position (`param0`, …); ours are `id`
            // and, in `/api/sources/{id}/keys/{key_id}`, `key_id`.
            let field = match e.name {
                "param0" => "id",
                "param1" => "key_id",
                other => other,
            };
            return Self::invalid(field, param_message(field, &e.reason));
        }
        if let Some(e) = err.downcast_ref::<ContentTypeError>() {
            return Self::new(
                ErrorCode::UnsupportedMediaType,
                format!("{e}; send application/json in UTF-8"),
            );
        }
        if err.is::<ParseRequestPayloadError>() || err.is::<poem::error::ParseJsonError>() {
            return Self::new(ErrorCode::MalformedJson, err.to_string());
        }
        match err.status() {
            StatusCode::NOT_FOUND => Self::new(ErrorCode::NotFound, "no such path"),
            StatusCode::METHOD_NOT_ALLOWED => Self::new(
                ErrorCode::MethodNotAllowed,
                "this path does not accept this method",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => payload_too_large(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                ErrorCode::UnsupportedMediaType,
                "send application/json in UTF-8",
            ),
            status if status.is_client_error() => Self::new(ErrorCode::BadRequest, err.to_string()),
            _ => Self::internal("request failed", &err),
        }
    }

    fn body(&self) -> ProblemBody {
        let (code, status, title) = self.code.describe();
        ProblemBody {
            ty: format!("/problems/{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: self.detail.clone(),
            code: self.code,
            errors: (!self.errors.is_empty()).then(|| self.errors.clone()),
        }
    }
}

/// 413 for a body over the limit.
pub(crate) fn payload_too_large() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        "the request body is larger than 1 MiB",
    )
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        let code = match &err {
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::SourceCodeTaken => ErrorCode::SourceCodeTaken,
            StoreError::OperatorHasContacts => ErrorCode::OperatorHasContacts,
            StoreError::SourceHasContacts => ErrorCode::SourceHasContacts,
            StoreError::ContactClosed => ErrorCode::ContactClosed,
            StoreError::OperatorInactive => ErrorCode::OperatorInactive,
            StoreError::OperatorAtCapacity => ErrorCode::OperatorAtCapacity,
            StoreError::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            StoreError::UnknownOperator { index, .. } => {
                let field = match index {
                    Some(i) => format!("operators[{i}].operator_id"),
                    None => "operator_id".to_owned(),
                };
                return Self::invalid(field, err.to_string());
            }
            StoreError::Overloaded => {
                return Self::new(ErrorCode::Overloaded, "too many requests are queued");
            }
            StoreError::Unavailable(cause) => {
                tracing::error!(error = %error_chain(cause.as_ref()), "store unavailable");
                return Self::new(ErrorCode::Unavailable, "the database does not answer");
            }
            StoreError::Internal(cause) => return Self::internal("store failed", cause.as_ref()),
        };
        // The client's own mistakes: the store's message carries no driver detail.
        Self::new(code, err.to_string())
    }
}

impl ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.code.describe().1
    }

    fn as_response(&self) -> Response {
        let body = self.body().to_json().unwrap_or_default().to_string();
        let mut resp = Response::builder()
            .status(self.status())
            .content_type(PROBLEM_JSON);
        if self.code == ErrorCode::Overloaded {
            resp = resp.header("Retry-After", "1");
        }
        if self.code == ErrorCode::Unauthorized {
            resp = resp.header("WWW-Authenticate", "Bearer");
        }
        resp.body(body)
    }
}

impl poem::IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.as_response()
    }
}

/// poem-openapi's parse messages name its internal type names, so the parameters of this
/// API get a message in the client's terms; any other keeps poem-openapi's.
fn param_message(name: &str, reason: &str) -> String {
    match name {
        "id" | "key_id" | "after" | "operator_id" | "source_id" | "lead_id" => "must be an integer",
        "limit" => "must be an integer between 1 and 1000",
        "is_active" | "unassigned" => "must be true or false",
        "status" => "must be open or closed",
        "Idempotency-Key" => "must be 1 to 255 visible ASCII characters",
        // The one way `/api/leads`'s pattern can fail.
        "external_id" => return crm_core::ValueError::ControlCharacter.to_string(),
        _ => return format!("invalid value: {reason}"),
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorCode; 19] = [
        ErrorCode::MalformedJson,
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::SourceCodeTaken,
        ErrorCode::OperatorHasContacts,
        ErrorCode::SourceHasContacts,
        ErrorCode::ContactClosed,
        ErrorCode::OperatorInactive,
        ErrorCode::OperatorAtCapacity,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::ValidationFailed,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::Internal,
        ErrorCode::Overloaded,
        ErrorCode::Unavailable,
    ];

    #[test]
    fn codes_match_their_schema_names_and_declared_statuses() {
        for code in ALL {
            assert_eq!(
                code.to_json(),
                Some(serde_json::Value::String(code.describe().0.to_owned()))
            );
            let status = code.describe().1.as_u16();
            assert!(
                code == ErrorCode::MethodNotAllowed || STATUSES.iter().any(|d| d.0 == status),
                "{status} is not declared"
            );
        }
    }

    #[test]
    fn overload_asks_to_retry() {
        let resp = ApiError::from(StoreError::Overloaded).as_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.content_type(), Some(PROBLEM_JSON));
        assert_eq!(
            resp.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
    }

    #[test]
    fn store_errors_keep_driver_detail_out() {
        let err = ApiError::from(StoreError::Internal("disk on fire".into()));
        assert_eq!(err.code(), ErrorCode::Internal);
        assert!(!err.detail.contains("disk"));
        let err = ApiError::from(StoreError::UnknownOperator {
            index: Some(1),
            operator_id: crm_core::OperatorId(7),
        });
        assert_eq!(err.errors[0].field, "operators[1].operator_id");
    }
}
