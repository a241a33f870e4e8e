//! Reading Apache-style configuration text: the supervisor re-reads a
//! customer's `.htaccess` to check that what a server child asks for is what
//! the customer wrote (and the lighttpd glue reads `.htaccess` files itself).
//!
//! Tokenizing follows httpd's `ap_getword_conf`: words separated by blanks, a
//! word may be quoted with `"` or `'` (a backslash escapes the quote inside),
//! `#` at the start of a line is a comment, a trailing backslash continues
//! the line. Section tags (`<IfModule …>`, `</Files>`) are passed over: the
//! directives inside them are returned like any other.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based number of the line the directive starts on.
    pub number: usize,
    pub name: Vec<u8>,
    pub args: Vec<Vec<u8>>,
}

impl Line {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// Split one logical line into words, as `ap_getword_conf` does: a word is
/// quoted (`"…"` or `'…'`, where `\<quote>` does not end it) or runs to the
/// next blank; inside any word `\\` stands for `\`, and inside a quoted
/// word `\<quote>` for the quote.
pub fn words(line: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            break;
        }
        let quote = matches!(line[i], b'"' | b'\'').then_some(line[i]);
        let (start, end) = match quote {
            Some(q) => {
                let start = i + 1;
                let mut j = start;
                while j < line.len() && line[j] != q {
                    j += if line[j] == b'\\' && line.get(j + 1) == Some(&q) { 2 } else { 1 };
                }
                i = (j + 1).min(line.len());
                (start, j.min(line.len()))
            }
            None => {
                let start = i;
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    i += 1;
                }
                (start, i)
            }
        };
        let raw = &line[start..end];
        let mut w = Vec::with_capacity(raw.len());
        let mut k = 0;
        while k < raw.len() {
            let next = raw.get(k + 1).copied();
            if raw[k] == b'\\' && (next == Some(b'\\') || (quote.is_some() && next == quote)) {
                k += 1;
            }
            w.push(raw[k]);
            k += 1;
        }
        out.push(w);
    }
    out
}

/// All directives in `text`, in order.
pub fn parse(text: &[u8]) -> Vec<Line> {
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut start = 0usize;
    for (idx, raw) in text.split(|&c| c == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if pending.is_empty() {
            start = idx + 1;
        }
        match raw.strip_suffix(b"\\") {
            Some(head) => {
                pending.extend_from_slice(head);
                pending.push(b' ');
                continue;
            }
            None => pending.extend_from_slice(raw),
        }
        let logical = std::mem::take(&mut pending);
        let trimmed: &[u8] = {
            let b = logical.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(logical.len());
            &logical[b..]
        };
        if trimmed.is_empty() || trimmed[0] == b'#' || trimmed[0] == b'<' {
            continue;
        }
        let mut w = words(trimmed);
        if w.is_empty() {
            continue;
        }
        let name = w.remove(0);
        out.push(Line { number: start, name, args: w });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn words_like_httpd() {
        assert_eq!(words(b"  a  b\tc "), vec![b("a"), b("b"), b("c")]);
        assert_eq!(words(br#"SuFcgiEnv GREETING "hello world""#), vec![b("SuFcgiEnv"), b("GREETING"), b("hello world")]);
        assert_eq!(words(br#"x 'it''s' "a \"q\"""#), vec![b("x"), b("it"), b("s"), b("a \"q\"")]);
        assert_eq!(words(br#"x "unterminated"#), vec![b("x"), b("unterminated")]);
        // As httpd's substring_conf: \\ is \ everywhere, \" only inside quotes.
        assert_eq!(words(br#""c\\d" e\\f g\"h"#), vec![b("c\\d"), b("e\\f"), b("g\\\"h")]);
        assert!(words(b"   ").is_empty());
    }

    #[test]
    fn lines_comments_sections_continuations() {
        let text = b"# comment\nSuFcgiApp app.py --port 1\r\n<IfModule mod_sufcgi.c>\n  SuFcgiEnv A \\\n   \"1 2\"\n</IfModule>\n\nAddHandler sufcgi-script .fcgi\n";
        let l = parse(text);
        assert_eq!(l.len(), 3);
        assert_eq!((l[0].number, l[0].name.as_slice()), (2, &b"SuFcgiApp"[..]));
        assert_eq!(l[0].args, vec![b("app.py"), b("--port"), b("1")]);
        assert!(l[1].is("sufcgienv"));
        assert_eq!((l[1].number, l[1].args.clone()), (4, vec![b("A"), b("1 2")]));
        assert_eq!(l[2].number, 8);
    }

    #[test]
    fn never_panics_on_noise() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut buf = Vec::new();
            for _ in 0..(x % 64) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let alphabet = b"ab \"'\\\n\r#<>\t";
                buf.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let _ = parse(&buf);
        }
    }
}
