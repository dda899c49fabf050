//! Text analysis shared by the index and the query language, so that text and queries are
//! cut into words the same way (SPEC §5):
//!
//! - a word is a maximal run of letters and digits; anything else separates words
//!   (`don't` is `don` + `t`; `alice@contoso.com` is `alice` `contoso` `com`);
//! - words are lower-cased and accent-folded (`Résumé` → `resume`), by Unicode
//!   compatibility decomposition with the combining marks dropped;
//! - scripts written without spaces (Han, Hiragana, Katakana, Hangul, Thai, Lao, Khmer,
//!   Myanmar) are cut into overlapping bigrams, so that a phrase query of bigrams finds a
//!   Chinese or Japanese phrase inside a sentence; a lone such character is one word.
//!
//! No stemming and no stop words: legal review needs exact words.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// One word of a text: its normalised form, its byte range in the text, and its position
/// (words counted from 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub start: usize,
    pub end: usize,
    pub position: usize,
}

/// Whether `c` belongs to a script written without spaces between words.
pub fn is_unspaced_script(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF     // Hangul Jamo
        | 0x0E00..=0x0EFF   // Thai, Lao
        | 0x1000..=0x109F   // Myanmar
        | 0x1780..=0x17FF   // Khmer
        | 0x2E80..=0x2FDF   // CJK radicals
        | 0x3040..=0x30FF   // Hiragana, Katakana
        | 0x3100..=0x312F   // Bopomofo
        | 0x3130..=0x318F   // Hangul compatibility Jamo
        | 0x31F0..=0x31FF   // Katakana extension
        | 0x3400..=0x4DBF   // CJK extension A
        | 0x4E00..=0x9FFF   // CJK unified ideographs
        | 0xAC00..=0xD7AF   // Hangul syllables
        | 0xF900..=0xFAFF   // CJK compatibility ideographs
        | 0xFF66..=0xFF9F   // half-width Katakana
        | 0x20000..=0x3134F // CJK extensions B-G
    )
}

/// Scripts whose accents are folded: Latin, Greek and Cyrillic (with their extensions and
/// the Latin ligatures). Marks in other scripts (Japanese dakuten, Hindi vowel signs) carry
/// meaning and are kept.
fn is_foldable(c: char) -> bool {
    matches!(c as u32, 0..=0x052F | 0x1E00..=0x1FFF | 0xFB00..=0xFB06)
}

/// Lower-cases and folds accents: `Ünïcödé` → `unicode`, `ß` → `ss`, `ﬁ` → `fi`.
pub fn normalize(word: &str) -> String {
    if word.is_ascii() {
        return word.to_ascii_lowercase();
    }
    let mut folded = String::with_capacity(word.len());
    let mut after_foldable = false;
    for c in word.chars() {
        if is_foldable(c) {
            for part in std::iter::once(c).nfkd().filter(|p| !is_combining_mark(*p)) {
                if part == 'ß' {
                    folded.push_str("ss");
                } else {
                    folded.extend(part.to_lowercase());
                }
            }
            after_foldable = true;
        } else if is_combining_mark(c) && after_foldable {
            // A combining accent written separately after a Latin/Greek/Cyrillic letter.
        } else {
            folded.extend(c.to_lowercase());
            after_foldable = false;
        }
    }
    folded
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || is_combining_mark(c)
}

/// Cuts `text` into words (see the module documentation).
pub fn words(text: &str) -> Vec<Word> {
    let mut words = Vec::new();
    let mut position = 0;
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if !is_word_char(c) || (is_combining_mark(c) && !c.is_alphanumeric()) {
            chars.next();
            continue;
        }
        let unspaced = is_unspaced_script(c);
        // A run of one kind: spaced word characters, or unspaced-script characters.
        let mut run: Vec<(usize, char)> = Vec::new();
        while let Some(&(index, next)) = chars.peek() {
            if !is_word_char(next) {
                break;
            }
            let kind = is_unspaced_script(next);
            if kind != unspaced && !is_combining_mark(next) {
                break;
            }
            run.push((index, next));
            chars.next();
        }
        let end_of = |i: usize| run[i].0 + run[i].1.len_utf8();
        if unspaced && run.len() > 1 {
            for (pair, window) in run.windows(2).enumerate() {
                let (from, to) = (window[0].0, end_of(pair + 1));
                words.push(Word {
                    text: normalize(&text[from..to]),
                    start: from,
                    end: to,
                    position,
                });
                position += 1;
            }
        } else {
            let end = end_of(run.len() - 1);
            let normalized = normalize(&text[start..end]);
            if !normalized.is_empty() {
                words.push(Word {
                    text: normalized,
                    start,
                    end,
                    position,
                });
                position += 1;
            }
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn texts(text: &str) -> Vec<String> {
        words(text).into_iter().map(|w| w.text).collect()
    }

    #[test]
    fn words_are_runs_of_letters_and_digits() {
        assert_eq!(texts("don't"), ["don", "t"]);
        assert_eq!(texts("alice@contoso.com"), ["alice", "contoso", "com"]);
        assert_eq!(texts("  Q3-2025 budget!! "), ["q3", "2025", "budget"]);
        assert_eq!(texts("and OR not"), ["and", "or", "not"]);
        assert!(texts(" ,.;- ").is_empty());
    }

    #[test]
    fn case_and_accents_are_folded() {
        assert_eq!(
            texts("Résumé NAÏVE Ångström"),
            ["resume", "naive", "angstrom"]
        );
        assert_eq!(texts("Straße ﬁle"), ["strasse", "file"]);
        assert_eq!(texts("ΚΑΛΗΜΈΡΑ κόσμε"), ["καλημερα", "κοσμε"]);
        assert_eq!(texts("Привет мир"), ["привет", "мир"]);
    }

    #[test]
    fn unspaced_scripts_become_bigrams() {
        assert_eq!(texts("予算の要約"), ["予算", "算の", "の要", "要約"]);
        assert_eq!(texts("東京"), ["東京"]);
        assert_eq!(texts("東"), ["東"]);
        assert_eq!(
            texts("iPhone用の充電器"),
            ["iphone", "用の", "の充", "充電", "電器"]
        );
        assert_eq!(texts("회의 일정"), ["회의", "일정"]);
        assert_eq!(texts("かがみ"), ["かが", "がみ"], "dakuten are kept");
        assert_eq!(
            texts("Re\u{301}sume\u{301}"),
            ["resume"],
            "separate accents fold too"
        );
        let positions: Vec<usize> = words("a 予算の b").iter().map(|w| w.position).collect();
        assert_eq!(positions, [0, 1, 2, 3]);
    }

    #[test]
    fn offsets_point_at_the_original_text() {
        let text = "Hé, 予算の!";
        for word in words(text) {
            assert!(text.is_char_boundary(word.start) && text.is_char_boundary(word.end));
            assert_eq!(normalize(&text[word.start..word.end]), word.text);
        }
    }

    proptest! {
        #[test]
        fn analysis_never_panics_and_positions_increase(text in "\\PC{0,64}") {
            let words = words(&text);
            for (i, word) in words.iter().enumerate() {
                prop_assert_eq!(word.position, i);
                prop_assert!(word.start < word.end && word.end <= text.len());
                prop_assert!(!word.text.is_empty());
            }
        }
    }
}
