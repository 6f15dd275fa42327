//! Who is asking, as core needs to know it: the subject that owns what it
//! creates, and which languages it may run. `lambda-api` builds a `Caller`
//! from a verified token (or the anonymous caller when auth is off).

use lambda_runtime::Language;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `sub` of the token; `None` when auth is off.
    pub subject: Option<String>,
    /// Languages it may initialize and execute (`execute:all` is every one).
    pub execute_languages: Vec<Language>,
    pub may_read_functions: bool,
    pub may_write_functions: bool,
    /// `admin` scope: may update or retire any dynamic function.
    pub admin: bool,
}

impl Caller {
    /// The caller when auth is off: may do everything, owns nothing.
    pub fn anonymous() -> Self {
        Caller {
            subject: None,
            execute_languages: Language::ALL.to_vec(),
            may_read_functions: true,
            may_write_functions: true,
            admin: false,
        }
    }

    pub fn may_execute(&self, language: Language) -> bool {
        self.execute_languages.contains(&language)
    }

    /// Whether this caller may see a thing owned by `owner`. Things created
    /// with auth off (`None`) belong to nobody in particular.
    pub fn owns(&self, owner: Option<&str>) -> bool {
        match owner {
            None => true,
            Some(owner) => self.subject.as_deref() == Some(owner),
        }
    }
}
