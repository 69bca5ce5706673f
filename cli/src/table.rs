//! Aligned text tables and key/value blocks for the `table` output format, laid out by
//! comfy-table: no borders, a header row, columns two spaces apart and as wide as their widest
//! cell in terminal columns (display width: CJK and emoji take two, combining accents none), so
//! wide and non-ASCII cells stay aligned. No line ends in spaces.

use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, ContentArrangement};

/// Spaces between two columns.
const GAP: u16 = 2;

/// A table with a header row; columns are separated by two spaces and padded to the widest
/// cell. Numeric columns are right-aligned. Cells are kept on one line.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    right: Vec<bool>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            right: vec![false; headers.len()],
        }
    }

    /// Right-align these columns (counts, ratios).
    pub fn numeric(mut self, columns: &[usize]) -> Self {
        for &c in columns {
            if let Some(r) = self.right.get_mut(c) {
                *r = true;
            }
        }
        self
    }

    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut cells: Vec<String> = cells.into_iter().map(|c| one_line(&c.into())).collect();
        cells.resize(self.headers.len().max(cells.len()), String::new());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The table as text, one line per row, each line ending in a newline.
    pub fn render(&self) -> String {
        let mut t = layout();
        t.set_header(self.headers.clone());
        t.add_rows(self.rows.iter().cloned());
        text(t, &self.right)
    }
}

/// A comfy-table with the look of this module: no borders nor separator lines, no wrapping
/// (whatever the terminal's width); without its tty feature comfy-table never styles.
fn layout() -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    t
}

/// Lay the table out: every column but the last followed by [`GAP`] spaces, the `right` ones
/// right-aligned; then each line without its trailing spaces and with a newline.
fn text(mut t: comfy_table::Table, right: &[bool]) -> String {
    let last = t.column_iter().count().saturating_sub(1);
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, if i < last { GAP } else { 0 }));
        if right.get(i).copied().unwrap_or(false) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = String::new();
    for line in t.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Key/value lines with the keys padded to the same width; pairs with an empty value are left out.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let mut t = layout();
    t.add_rows(
        pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| vec![one_line(k), one_line(v)]),
    );
    if t.is_empty() {
        return String::new();
    }
    text(t, &[])
}

/// A section: a title line, then the body (or `empty` when the table has no rows).
pub fn section(title: &str, table: &Table, empty: &str) -> String {
    if table.is_empty() {
        format!("{title}: {empty}\n")
    } else {
        format!("{title}\n{}", table.render())
    }
}

/// Newlines, tabs and other control characters would break the alignment: make them spaces.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.trim().chars() {
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// A count or ratio cell: "-" for nothing.
pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use unicode_width::UnicodeWidthStr;

    #[test]
    fn columns_are_aligned_and_numbers_right_aligned() {
        let mut t = Table::new(&["ROLE", "HAS POLICY", "ACTION"]);
        t.row(["web-server-role", "no", "attached"]);
        t.row(["db", "yes", "already"]);
        t.row(["batch\nworker", "no", "failed: User is not authorized"]);
        assert_eq!(
            t.render(),
            "ROLE             HAS POLICY  ACTION\n\
             web-server-role  no          attached\n\
             db               yes         already\n\
             batch worker     no          failed: User is not authorized\n"
        );
        let mut n = Table::new(&["WAVE", "INSTANCES"]).numeric(&[1]);
        n.row(["canary", "10"]);
        n.row(["wave 1", "1200"]);
        assert_eq!(n.render(), "WAVE    INSTANCES\ncanary         10\nwave 1       1200\n");
        assert_eq!(n.len(), 2);
    }

    #[test]
    fn unicode_widths_and_short_rows() {
        let mut t = Table::new(&["A", "B"]);
        t.row(["äöü"]);
        t.row(["x", "y"]);
        assert_eq!(t.render(), "A    B\näöü\nx    y\n");
    }

    /// Where, in terminal columns, each of `cells` starts in `line` (the cells in order, each
    /// found after the one before) and where it ends.
    fn spans(line: &str, cells: &[&str]) -> Vec<(usize, usize)> {
        let mut from = 0;
        cells
            .iter()
            .map(|cell| {
                let at = from
                    + line[from..]
                        .find(cell)
                        .unwrap_or_else(|| panic!("{cell:?} not in {line:?}"));
                from = at + cell.len();
                (line[..at].width(), line[..from].width())
            })
            .collect()
    }

    #[test]
    fn wide_and_non_ascii_cells_stay_aligned_by_display_width() {
        let header = ["NAME", "ROLE", "COUNT", "NOTE"];
        let rows = [
            ["東京", "サーバー", "3", "ok"],
            ["🚀 launch", "x", "12", "日本語のテキスト"],
            ["café", "naïve", "1200", "e\u{301}"],
            ["Zürich", "ñandú", "—", "emoji 🎉 and text"],
            ["plain", "ascii", "7", "z"],
        ];
        let mut t = Table::new(&header).numeric(&[2]);
        for r in &rows {
            t.row(*r);
        }
        let text = t.render();
        println!("{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + rows.len(), "one line per row: {text}");
        let all: Vec<[&str; 4]> = std::iter::once(header).chain(rows).collect();
        let widest = |c: usize| all.iter().map(|r| r[c].width()).max().unwrap();
        // where each column starts: after the widest cell of the columns before it and two spaces
        let starts = [
            0,
            widest(0) + 2,
            widest(0) + widest(1) + 4,
            widest(0) + widest(1) + widest(2) + 6,
        ];
        for (line, cells) in lines.iter().zip(&all) {
            assert_eq!(*line, line.trim_end(), "trailing spaces: {line:?}");
            let spans = spans(line, cells);
            for c in [0, 1, 3] {
                assert_eq!(spans[c].0, starts[c], "column {c} of {line:?}");
            }
            // the numeric column is right-aligned: every cell ends where the widest one does
            assert_eq!(spans[2].1, starts[2] + widest(2), "{line:?}");
        }
        // an exact rendering: the CJK, emoji and accented cells are padded by their display width
        let mut n = Table::new(&["CITY", "N"]).numeric(&[1]);
        n.row(["東京", "3"]);
        n.row(["Zürich", "12"]);
        n.row(["🚀", "100"]);
        assert_eq!(
            n.render(),
            "CITY      N\n\
             東京      3\n\
             Zürich   12\n\
             🚀      100\n"
        );
    }

    #[test]
    fn wide_cells_are_never_wrapped_nor_cut() {
        let long = "x".repeat(400) + " 終わり";
        let mut t = Table::new(&["ID", "WHY"]);
        t.row(["i-1", long.as_str()]);
        t.row(["i-22", "short"]);
        assert_eq!(t.render(), format!("ID    WHY\ni-1   {long}\ni-22  short\n"));
        assert_eq!(Table::new(&["ONLY"]).render(), "ONLY\n");
        assert_eq!(key_values(&[("Empty", String::new())]), "");
        assert_eq!(
            key_values(&[("Name", "名前".into()), ("Wide key ✓", "v".into())]),
            "Name        名前\nWide key ✓  v\n"
        );
    }

    #[test]
    fn sections_and_key_values() {
        let t = Table::new(&["INSTANCE"]);
        assert_eq!(section("Failed instances", &t, "none"), "Failed instances: none\n");
        assert_eq!(
            key_values(&[
                ("Status", "FAILED".into()),
                ("Error", String::new()),
                ("Execution", "arn:x".into())
            ]),
            "Status     FAILED\nExecution  arn:x\n"
        );
        assert_eq!(opt::<u32>(None), "-");
    }
}
