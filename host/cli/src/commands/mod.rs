//! One module per top-level command.

pub mod artifacts;
pub mod control;
pub mod doctor;
pub mod plugins;
pub mod sandboxes;
pub mod serve;
pub mod shutdown;
pub mod templates;
pub mod workspace_runs;

use crate::display::safe;
use crate::outln;

/// Print rows as left-aligned columns. Every cell is printed through
/// [`safe`]: cells hold what the server or a plugin said.
pub fn print_table(rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| safe(c).into_owned()).collect()).collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0)).collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| if i + 1 == row.len() { c.clone() } else { format!("{c:w$}", w = widths[i]) })
            .collect();
        outln!("{}", line.join("  ").trim_end());
    }
}

/// The first `n` characters of `s` (a digest shortened for a table),
/// however short `s` is.
pub fn prefix(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}
