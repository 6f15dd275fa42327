//! Who is asking, as core needs to know it: the subject that owns what it
//! creates, and which languages it may run. `lambda-api` builds a `Caller`
//! from a verified token (or the anonymous caller when auth is off).

use lambda_runtime::Language;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `sub` of the token; `None` when auth is off.
    pub subject: Option<String>,
    /// Languages it may initialize and execute (`execute:all` is every one).
    pub execute_languages: LanguageSet,
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
            execute_languages: Language::ALL.into_iter().collect(),
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

/// A set of languages, one bit each. A `Caller` is built for every request
/// and copied into the handler's extractor; a `Vec` cost two allocations
/// there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LanguageSet(u8);

impl LanguageSet {
    fn bit(language: Language) -> u8 {
        1 << language.index()
    }

    pub fn contains(&self, language: &Language) -> bool {
        self.0 & Self::bit(*language) != 0
    }
}

impl FromIterator<Language> for LanguageSet {
    fn from_iter<I: IntoIterator<Item = Language>>(languages: I) -> Self {
        LanguageSet(
            languages
                .into_iter()
                .fold(0, |bits, language| bits | Self::bit(language)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_language_set_holds_exactly_its_languages() {
        let some: LanguageSet = [Language::Python, Language::Wasm].into_iter().collect();
        assert!(some.contains(&Language::Python) && some.contains(&Language::Wasm));
        assert!(!some.contains(&Language::Nodejs) && !some.contains(&Language::Rust));
        let all = Caller::anonymous();
        assert!(Language::ALL
            .iter()
            .all(|language| all.may_execute(*language)));
        assert!(!LanguageSet::default().contains(&Language::Rust));
    }
}
