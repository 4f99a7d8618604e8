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

/// Print rows as left-aligned columns.
pub fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0)).collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| if i + 1 == row.len() { c.clone() } else { format!("{c:w$}", w = widths[i]) })
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
