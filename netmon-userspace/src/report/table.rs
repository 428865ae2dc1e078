//! Aligned text tables and CSV, both from one description of a table.
//!
//! Cells are rendered into buffers that grow but are never allocated per
//! row, so a million rows cost a few large allocations, not millions.
use std::io::{self, Write};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    /// For numbers.
    Right,
}

/// A column's header and alignment.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub header: &'static str,
    pub align: Align,
}

/// What [`write_text`] and [`write_csv`] print.
pub trait Table {
    fn columns(&self) -> &[Column];

    fn rows(&self) -> usize;

    /// Appends the text of one cell to `out`.
    fn cell(&self, row: usize, column: usize, out: &mut String);
}

/// Columns separated by two spaces, padded to their widest cell; no line
/// ends in spaces, and an empty cell shows as `-`.
///
/// Aligning needs each column's widest cell before the first line, so
/// every cell is rendered twice; keeping a million rows of text instead
/// costs more in memory than rendering again costs in time.
pub fn write_text(out: &mut impl Write, table: &impl Table) -> io::Result<()> {
    let widths = widths(table);
    let columns = table.columns();
    let mut cell = String::new();
    let mut line = String::new();
    for row in Row::header_then(table.rows()) {
        line.clear();
        for (index, column) in columns.iter().enumerate() {
            render_text(table, row, index, &mut cell);
            pad(&mut line, &cell, widths[index] - width(&cell), column.align);
        }
        line.truncate(line.trim_end_matches(' ').len());
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    Ok(())
}

/// The widest cell of each column, header included.
fn widths(table: &impl Table) -> Vec<usize> {
    let mut widths = vec![0; table.columns().len()];
    let mut cell = String::new();
    for row in Row::header_then(table.rows()) {
        for (index, widest) in widths.iter_mut().enumerate() {
            render_text(table, row, index, &mut cell);
            *widest = (*widest).max(width(&cell));
        }
    }
    widths
}

/// Replaces `out` with a cell's text; an empty cell shows as `-`.
fn render_text(table: &impl Table, row: Row, column: usize, out: &mut String) {
    out.clear();
    render(table, row, column, out);
    if out.is_empty() {
        out.push('-');
    }
}

/// Characters, which is bytes for the ASCII nearly every cell is.
fn width(cell: &str) -> usize {
    if cell.is_ascii() {
        cell.len()
    } else {
        cell.chars().count()
    }
}

/// RFC 4180 quoting, header first; lines end in `\n` as Unix tools expect.
pub fn write_csv(out: &mut impl Write, table: &impl Table) -> io::Result<()> {
    let columns = table.columns().len();
    let mut cell = String::new();
    let mut line = String::new();
    for row in Row::header_then(table.rows()) {
        line.clear();
        for index in 0..columns {
            if index > 0 {
                line.push(',');
            }
            cell.clear();
            render(table, row, index, &mut cell);
            push_csv_field(&mut line, &cell);
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    Ok(())
}

/// The header line, or a data row by index.
#[derive(Clone, Copy)]
enum Row {
    Header,
    Data(usize),
}

impl Row {
    fn header_then(rows: usize) -> impl Iterator<Item = Self> {
        std::iter::once(Self::Header).chain((0..rows).map(Self::Data))
    }
}

fn render(table: &impl Table, row: Row, column: usize, out: &mut String) {
    match row {
        Row::Header => out.push_str(table.columns()[column].header),
        Row::Data(row) => table.cell(row, column, out),
    }
}

fn pad(line: &mut String, cell: &str, fill: usize, align: Align) {
    match align {
        Align::Right => {
            push_spaces(line, fill);
            line.push_str(cell);
        }
        Align::Left => {
            line.push_str(cell);
            push_spaces(line, fill);
        }
    }
    line.push_str("  ");
}

/// `n` spaces, a slice at a time rather than a char at a time.
fn push_spaces(line: &mut String, mut n: usize) {
    const SPACES: &str = "                                ";
    while n > 0 {
        let chunk = n.min(SPACES.len());
        line.push_str(&SPACES[..chunk]);
        n -= chunk;
    }
}

/// One CSV field, quoted when it holds a comma, a quote or a line break.
///
/// A cell a spreadsheet would take for a formula (it starts with `=`, `+`,
/// `-`, `@`, a tab or a carriage return: a process or host name can) gets
/// a leading `'`, which spreadsheets show as text.
fn push_csv_field(line: &mut String, cell: &str) {
    let formula = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let cell = if formula {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    };
    if cell.contains([',', '"', '\n', '\r']) {
        line.push('"');
        line.push_str(&cell.replace('"', "\"\""));
        line.push('"');
    } else {
        line.push_str(&cell);
    }
}

/// A small table of owned cells, for summaries.
pub struct Owned {
    pub columns: Vec<Column>,
    pub cells: Vec<Vec<String>>,
}

impl Table for Owned {
    fn columns(&self) -> &[Column] {
        &self.columns
    }

    fn rows(&self) -> usize {
        self.cells.len()
    }

    fn cell(&self, row: usize, column: usize, out: &mut String) {
        out.push_str(&self.cells[row][column]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Owned {
        Owned {
            columns: vec![
                Column {
                    header: "NAME",
                    align: Align::Left,
                },
                Column {
                    header: "N",
                    align: Align::Right,
                },
                Column {
                    header: "NOTE",
                    align: Align::Left,
                },
            ],
            cells: vec![
                vec!["a".into(), "100".into(), "x".into()],
                vec!["longer, with \"quotes\"".into(), "7".into(), String::new()],
            ],
        }
    }

    fn written(write: fn(&mut Vec<u8>, &Owned) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        write(&mut out, &table()).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_aligns_without_trailing_spaces() {
        assert_eq!(
            written(write_text),
            "NAME                     N  NOTE\n\
             a                      100  x\n\
             longer, with \"quotes\"    7  -\n"
        );
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(
            written(write_csv),
            "NAME,N,NOTE\na,100,x\n\"longer, with \"\"quotes\"\"\",7,\n"
        );
    }

    #[test]
    fn a_cell_a_spreadsheet_would_evaluate_is_text() {
        let mut line = String::new();
        for cell in [
            "=2+5*cmd|x",
            "@SUM(A1)",
            "-1",
            "plain",
            "=HYPERLINK(\"x\",\"y\")",
        ] {
            push_csv_field(&mut line, cell);
            line.push('|');
        }
        assert_eq!(
            line,
            "'=2+5*cmd|x|'@SUM(A1)|'-1|plain|\"'=HYPERLINK(\"\"x\"\",\"\"y\"\")\"|"
        );
    }
}
