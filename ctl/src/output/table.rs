//! Plain aligned columns, like `ps` or `kubectl get`: a header row, cells separated by two
//! spaces, no borders, no trailing blanks. No colour inside cells (it would break alignment).

/// A table to print: headers and rows of cells.
#[derive(Clone, Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(headers: I) -> Table {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// A table without a header row (key/value listings).
    pub fn headless() -> Table {
        Table::default()
    }

    pub fn row<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, cells: I) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, each line ending in `\n`.
    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        let all = std::iter::once(&self.headers)
            .filter(|h| !h.is_empty())
            .chain(&self.rows);
        for row in all.clone() {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in all {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Shortens `text` to `max` characters, ending in `…` when cut; newlines become spaces.
pub fn truncate(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c == '\n' { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell() {
        let mut t = Table::new(["ID", "STATE", "ERROR"]);
        t.row(["a1", "succeeded", ""]);
        t.row(["b22222", "failed", "disk full"]);
        assert_eq!(
            t.render(),
            "ID      STATE      ERROR\n\
             a1      succeeded\n\
             b22222  failed     disk full\n"
        );
    }

    #[test]
    fn headless_and_unicode_widths() {
        let mut t = Table::headless();
        t.row(["clock", "ok"]);
        t.row(["état", "—"]);
        assert_eq!(t.render(), "clock  ok\nétat   —\n");
        assert!(!t.is_empty());
        assert!(Table::new(["A"]).is_empty());
    }

    #[test]
    fn truncation() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("a\nb", 10), "a b");
        assert_eq!(truncate("abcdefghij", 5), "abcd…");
    }
}
