//! Limits a policy file is held to before it is parsed: its size, and how deep it nests.
//!
//! The YAML scanner looks ahead over a whole run of flow openers (`[[[[…`) or compact block
//! entries (`- - - …`) before it emits the first event, and does work per open level at each
//! step: a file nesting 100k levels deep (500 KB) took 41 s before the parser's own depth
//! limit was even consulted. The pre-scan here is one linear pass over the text; it measures
//! nesting the way YAML nests (block indentation, compact `- `/`? ` entries, flow brackets
//! outside quotes, comments and block scalars) and errs on the deep side, which only matters
//! for a file near the limit, far beyond any real policy.

/// The largest policy file read, in bytes. Real policies are a few KiB; the built-in set is
/// under 20 KiB in all.
pub const MAX_POLICY_FILE_BYTES: usize = 1024 * 1024;

/// The deepest nesting (mappings, sequences, flow collections) a policy file may have. Real
/// policies nest about 10 levels deep; the YAML reader itself refuses more than 128.
pub const MAX_POLICY_NESTING: usize = 100;

/// Why a policy text is refused before it is parsed.
pub fn check_policy_text(text: &str) -> Result<(), String> {
    check_size(text.len())?;
    if let Some(line) = nesting_over(text, MAX_POLICY_NESTING) {
        return Err(format!(
            "nests deeper than {MAX_POLICY_NESTING} levels (at line {line}), the limit for a \
             policy file; refused without parsing it"
        ));
    }
    Ok(())
}

/// Why a policy file of `len` bytes is refused, if it is.
pub fn check_size(len: usize) -> Result<(), String> {
    if len > MAX_POLICY_FILE_BYTES {
        return Err(format!(
            "{len} bytes, larger than the {MAX_POLICY_FILE_BYTES} bytes (1 MiB) a policy file \
             may have; refused without parsing it"
        ));
    }
    Ok(())
}

/// The 1-based line where `text` first nests deeper than `max`, if it does. One pass, no
/// allocation beyond the stack of block indentations (at most one entry per line).
pub fn nesting_over(text: &str, max: usize) -> Option<usize> {
    // Indentations of the open block collections.
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    // Inside a quoted scalar that continues on the next line: its quote character.
    let mut quote: Option<u8> = None;
    // Inside a block scalar (`|`, `>`): lines indented more than this belong to it.
    let mut block_scalar: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|&&b| b == b' ').count();
        let rest = &bytes[indent..];
        let blank = rest.iter().all(|b| b.is_ascii_whitespace());
        if let Some(parent) = block_scalar {
            if blank || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        let mut i = indent;
        let mut depth_here = 0usize;
        if quote.is_none() && flow == 0 {
            if blank || rest.first() == Some(&b'#') {
                continue;
            }
            if indent == 0
                && (rest.starts_with(b"---") || rest.starts_with(b"...") || rest[0] == b'%')
            {
                // A new document (or a directive): nothing is open any more.
                indents.clear();
                if rest[0] == b'%' {
                    continue;
                }
                i += 3;
            } else {
                while indents.last().is_some_and(|&top| top > indent) {
                    indents.pop();
                }
                if indents.last() != Some(&indent) {
                    indents.push(indent);
                }
            }
        }
        if quote.is_none() {
            // Compact nested entries on one line: `- - - x`, `? - x`.
            while i < bytes.len()
                && matches!(bytes[i], b'-' | b'?')
                && bytes.get(i + 1).is_none_or(|b| *b == b' ' || *b == b'\t')
            {
                depth_here += 1;
                i += 1;
                while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
                    i += 1;
                }
            }
        }
        let deep = |flow: usize, extra: usize| indents.len() + extra + flow > max;
        if deep(flow, depth_here) {
            return Some(n + 1);
        }
        let mut prev: Option<u8> = if i > 0 { Some(bytes[i - 1]) } else { None };
        while i < bytes.len() {
            let b = bytes[i];
            i += 1;
            match quote {
                Some(b'"') => {
                    if b == b'\\' {
                        i += 1;
                    } else if b == b'"' {
                        quote = None;
                    }
                    prev = Some(b);
                    continue;
                }
                Some(_) => {
                    if b == b'\'' {
                        if bytes.get(i) == Some(&b'\'') {
                            i += 1;
                        } else {
                            quote = None;
                        }
                    }
                    prev = Some(b);
                    continue;
                }
                None => {}
            }
            let token_start = match prev {
                None => true,
                Some(p) => {
                    p == b' '
                        || p == b'\t'
                        // `[[`, `{"a":"b"}`: indicators of a flow collection (a `[` in a
                        // plain scalar outside one is just text).
                        || (flow > 0 && matches!(p, b'[' | b'{' | b',' | b':'))
                }
            };
            match b {
                b'#' if prev.is_none_or(|p| p == b' ' || p == b'\t') => break,
                b'"' | b'\'' if token_start => quote = Some(b),
                b'[' | b'{' if flow > 0 || token_start => {
                    flow += 1;
                    if deep(flow, depth_here) {
                        return Some(n + 1);
                    }
                }
                b']' | b'}' if flow > 0 => flow -= 1,
                b'|' | b'>' if flow == 0 && token_start && is_block_header(&bytes[i..]) => {
                    block_scalar = Some(indent);
                    break;
                }
                _ => {}
            }
            prev = Some(b);
        }
    }
    None
}

/// Whether what follows a `|` or `>` makes it a block scalar header: only indentation and
/// chomping indicators, then blanks or a comment.
fn is_block_header(rest: &[u8]) -> bool {
    let mut i = 0;
    while i < rest.len() && (rest[i].is_ascii_digit() || rest[i] == b'+' || rest[i] == b'-') {
        i += 1;
    }
    let tail = &rest[i..];
    let trimmed = tail
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .map_or(&[][..], |p| &tail[p..]);
    trimmed.is_empty()
        || (trimmed[0] == b'#' && tail.first().is_some_and(|b| *b == b' ' || *b == b'\t'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_policies_nest_shallowly() {
        for &(name, text) in crate::policy::builtin::FILES {
            let deepest = (1..=MAX_POLICY_NESTING)
                .find(|&d| nesting_over(text, d).is_none())
                .unwrap_or(usize::MAX);
            assert!(deepest <= 20, "{name}: measured {deepest} levels");
            assert_eq!(check_policy_text(text), Ok(()), "{name}");
        }
    }

    #[test]
    fn measures_block_and_flow_nesting() {
        let depth = |text: &str| (0..1000).find(|&d| nesting_over(text, d).is_none());
        assert_eq!(depth("a: 1\n"), Some(1));
        assert_eq!(depth("a:\n  b:\n    c: 1\n"), Some(3));
        assert_eq!(depth("a:\n  b:\n    c: 1\nd: 2\n"), Some(3));
        assert_eq!(depth("a: [1, {b: [2]}]\n"), Some(4));
        assert_eq!(depth("- - - x\n"), Some(4));
        assert_eq!(depth("{\"a\":{\"b\":[1]}}"), Some(4));
        // Brackets in quotes, comments, block scalars and plain scalars do not nest.
        assert_eq!(depth("a: \"[[[{{\" # [[[\nb: 'it''s [[['\n"), Some(1));
        assert_eq!(depth("a: |\n  [[[[[[\n  {{{{\nb: x[[[\n"), Some(1));
        assert_eq!(depth("a: >-\n      - - - - -\n\n  x\nb: 1\n"), Some(1));
        assert_eq!(depth("a: \"multi\n  [[[[ line\"\nb: 1\n"), Some(1));
        // A new document starts from nothing.
        assert_eq!(depth("a:\n  b: 1\n---\nc: 1\n"), Some(2));
    }

    #[test]
    fn deep_nesting_is_found_on_its_line() {
        let flow = format!("a: 1\nb: {}", "[".repeat(200));
        assert_eq!(nesting_over(&flow, MAX_POLICY_NESTING), Some(2));
        let compact = format!("x: 1\n\n{}x\n", "- ".repeat(150));
        assert_eq!(nesting_over(&compact, MAX_POLICY_NESTING), Some(3));
        let at_limit = format!("{}{}", "[".repeat(MAX_POLICY_NESTING - 1), "]".repeat(99));
        assert_eq!(nesting_over(&at_limit, MAX_POLICY_NESTING), None);
    }

    /// A file in a fresh temporary directory, removed on drop.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> TempFile {
            let dir = std::env::temp_dir()
                .join(format!("fluxadmit-limits-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    #[test]
    fn a_deeply_nested_policy_file_is_refused_naming_file_and_limit() {
        use crate::policy::load::read_documents;
        // 100k levels, the shapes the YAML scanner looks ahead over: JSON-like flow mappings
        // (500 KB, as in the report), flow sequences, and compact block sequences.
        let shapes = [
            (
                "json.yaml",
                format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000)),
            ),
            (
                "flow.yaml",
                format!("kind: DeploymentPolicy\nspec: {}", "[".repeat(100_000)),
            ),
            ("block.yaml", format!("{}x\n", "- ".repeat(100_000))),
        ];
        for (name, text) in shapes {
            let file = TempFile::new(name, &text);
            let e = read_documents(std::slice::from_ref(&file.0)).unwrap_err();
            assert_eq!(e.file, file.0.display().to_string());
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!(
                    "{}: nests deeper than 100 levels (at line ",
                    file.0.display()
                )),
                "{name}: {shown}"
            );
            assert!(shown.contains("the limit for a policy file"), "{shown}");
        }
    }

    #[test]
    fn a_policy_file_over_the_size_limit_is_refused() {
        use crate::policy::load::{parse_documents, read_documents};
        let text = format!(
            "apiVersion: fluxadmit.io/v1alpha1\nkind: DeploymentPolicy\n# {}\n",
            "x".repeat(MAX_POLICY_FILE_BYTES)
        );
        let file = TempFile::new("big.yaml", &text);
        let e = read_documents(std::slice::from_ref(&file.0)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: {} bytes, larger than the 1048576 bytes (1 MiB) a policy file may have; \
                 refused without parsing it",
                file.0.display(),
                text.len()
            )
        );
        let e = parse_documents("inline.yaml", &text).unwrap_err();
        assert_eq!(e.file, "inline.yaml");
        assert!(e.reason.contains("1 MiB"), "{e}");
    }

    #[test]
    fn normal_policies_still_load() {
        let text = "apiVersion: fluxadmit.io/v1alpha1\nkind: DeploymentPolicy\n\
                    metadata: {name: pss}\nspec:\n  match: {resources: [{kinds: [Pod]}]}\n  \
                    rules:\n  - name: r\n    podSecurity:\n      level: restricted\n      \
                    exemptions: {images: [\"registry.example.com/[a-z]*\"]}\n";
        let file = TempFile::new("pss.yaml", text);
        let set = crate::policy::load::load_paths(std::slice::from_ref(&file.0)).unwrap();
        assert_eq!(set.len(), 1);
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let all = [examples.join("examples"), examples, "builtin".into()];
        for p in all {
            crate::policy::load::read_documents(std::slice::from_ref(&p))
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
}
