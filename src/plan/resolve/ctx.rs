//! Where resolution errors point (the plan's path and text), and the checks of single values that
//! every section shares: integers and ratios within a range, durations.

use std::cell::RefCell;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use crate::plan::error::PlanError;
use crate::plan::raw::SpannedStr;
use crate::plan::units::{format_duration, parse_duration};

/// Where errors point: the plan's path and text.
pub(super) struct Ctx<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    /// Validating without connecting (`plan --offline`): a secret's variable may be unset, which
    /// becomes a note instead of an error (CI checks plans without the secrets).
    pub(super) offline: bool,
    pub(super) notes: RefCell<Vec<String>>,
}

impl Ctx<'_> {
    /// An error at `span` of the plan.
    pub(super) fn err(
        &self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> PlanError {
        PlanError::at(self.path, self.text, span, message, hint)
    }

    /// An integer within `min..=max`.
    pub(super) fn int(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        default: i64,
        min: i64,
        max: i64,
    ) -> Result<i64, PlanError> {
        let Some(v) = v else { return Ok(default) };
        let n = *v.get_ref();
        if n < min || n > max {
            return Err(self.err(
                v.span(),
                format!("`{key}` is {n}, outside {min}..={max}"),
                format!("use a value between {min} and {max}, e.g. `{key} = {default}`"),
            ));
        }
        Ok(n)
    }

    /// A ratio within `0.0..=1.0`.
    pub(super) fn ratio(&self, v: &Option<Spanned<f64>>, key: &str, default: f64) -> Result<f64, PlanError> {
        let Some(v) = v else { return Ok(default) };
        let x = *v.get_ref();
        if !(0.0..=1.0).contains(&x) {
            return Err(self.err(
                v.span(),
                format!("`{key}` is {x}, outside 0.0..=1.0"),
                format!("a ratio is between 0 and 1, e.g. `{key} = {default}`"),
            ));
        }
        Ok(x)
    }

    /// A duration (`default` when the key is absent).
    pub(super) fn duration(
        &self,
        v: &Option<SpannedStr>,
        key: &str,
        default: &str,
    ) -> Result<Duration, PlanError> {
        let text = v.as_ref().map_or(default, |v| v.get_ref().as_str());
        parse_duration(text).map_err(|e| {
            let span = v.as_ref().map_or(0..0, |v| v.span());
            self.err(
                span,
                format!("`{key}` is not a duration: {e}"),
                format!("write it like `{key} = \"{default}\"` (units: ms, s, m, h)"),
            )
        })
    }

    /// A duration of at least `min`, for a key where zero (or less than `min`) makes no sense;
    /// `why` says what such a value would do.
    pub(super) fn duration_at_least(
        &self,
        v: &Option<SpannedStr>,
        key: &str,
        default: &str,
        min: Duration,
        why: &str,
    ) -> Result<Duration, PlanError> {
        let d = self.duration(v, key, default)?;
        match v {
            Some(v) if d < min => {
                let what = if d.is_zero() {
                    "zero".to_string()
                } else {
                    format!("{}, less than {}", format_duration(d), format_duration(min))
                };
                Err(self.err(
                    v.span(),
                    format!("`{key}` is {what}: {why}"),
                    format!(
                        "use a duration of at least {}, e.g. `{key} = \"{default}\"`",
                        format_duration(min)
                    ),
                ))
            }
            _ => Ok(d),
        }
    }
}
