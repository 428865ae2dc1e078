//! The map written out: a table for people, JSON, Graphviz DOT, CSV.
use std::{
    fmt::{self, Write as _},
    io::{self, Write},
};

use serde_json::{Value, json};

use super::{Edge, Graph, Node, Seen};
use crate::{
    escape::Escaped,
    report::table::{Align, Column, Table, write_csv, write_text},
    time::UnixTime,
};

/// How `netmon graph` prints the map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GraphFormat {
    /// One edge a line, aligned; with `--host`, who reaches it and what it
    /// reaches, apart.
    #[default]
    Text,
    /// `{"nodes": [...], "edges": [...]}`, documented in docs/design.md.
    Json,
    /// Graphviz: hosts as boxes, other peers as ellipses, edges labelled
    /// with ports, one-sided edges dashed.
    Dot,
    /// One edge a row.
    Csv,
}

pub(super) fn write(
    graph: &Graph,
    format: GraphFormat,
    host: Option<&str>,
    out: &mut impl Write,
) -> io::Result<()> {
    match format {
        GraphFormat::Text => text(graph, host, out),
        GraphFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &to_json(graph))?;
            out.write_all(b"\n")
        }
        GraphFormat::Dot => out.write_all(dot(graph).as_bytes()),
        GraphFormat::Csv => write_csv(out, &Edges::all(graph).for_csv()),
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host(name) => write!(f, "{}", Escaped::new(name.as_str())),
            Self::Address(ip) => write!(f, "{ip}"),
            Self::Net(net) => write!(f, "{net}/{}", super::Group::net_bits(*net)),
            // RFC 4007's zone, which names the link: here the host's.
            Self::LinkLocal { ip, net, host } => {
                write!(f, "{ip}")?;
                if *net {
                    write!(f, "/{}", super::Group::net_bits(*ip))?;
                }
                write!(f, "%{}", Escaped::new(host.as_str()))
            }
            Self::Class(class) => write!(f, "{class}"),
        }
    }
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Self::Host(_) => "host",
            Self::Address(_) | Self::LinkLocal { net: false, .. } => "address",
            Self::Net(_) | Self::LinkLocal { net: true, .. } => "net",
            Self::Class(_) => "class",
        }
    }
}

/// Which sides recorded an edge.
fn observed_by(edge: &Edge) -> &'static str {
    match (edge.by_client.is_some(), edge.by_server.is_some()) {
        (true, true) => "both",
        (true, false) => "client",
        _ => "server",
    }
}

fn ports(edge: &Edge) -> Vec<String> {
    edge.ports.iter().map(ToString::to_string).collect()
}

fn seen_json(seen: Option<Seen>) -> Value {
    seen.map_or(Value::Null, |seen| {
        json!({
            "connections": seen.connections,
            "first_seen": UnixTime::from_secs(seen.first_seen),
            "last_seen": UnixTime::from_secs(seen.last_seen),
        })
    })
}

fn to_json(graph: &Graph) -> Value {
    let nodes: Vec<Value> = graph
        .nodes
        .iter()
        .map(|node| {
            let mut value = json!({"id": node_id(node), "kind": node.kind()});
            match node {
                Node::Host(name) => {
                    value["addresses"] =
                        json!(graph.addresses.get(name).cloned().unwrap_or_default());
                }
                Node::Address(ip) | Node::LinkLocal { ip, net: false, .. } => {
                    value["class"] = json!(crate::classify::Class::of(*ip).as_str())
                }
                Node::LinkLocal { net: true, .. } => {}
                Node::Net(_) | Node::Class(_) => {}
            }
            value
        })
        .collect();
    let edges: Vec<Value> = graph
        .edges
        .iter()
        .map(|(&(client, server), edge)| {
            json!({
                "client": node_id(&graph.nodes[client]),
                "server": node_id(&graph.nodes[server]),
                "ports": ports(edge),
                "observed_by": observed_by(edge),
                "one_sided": graph.one_sided((client, server), edge),
                "by_client": seen_json(edge.by_client),
                "by_server": seen_json(edge.by_server),
                "owners": edge.owners.iter().map(|o| o.name().to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"nodes": nodes, "edges": edges})
}

/// A node's name in JSON and DOT: as displayed, but a host's name
/// unescaped (JSON and DOT quote it themselves).
fn node_id(node: &Node) -> String {
    match node {
        Node::Host(name) => name.clone(),
        Node::LinkLocal {
            ip,
            net: false,
            host,
        } => format!("{ip}%{host}"),
        Node::LinkLocal {
            ip,
            net: true,
            host,
        } => {
            format!("{ip}/{}%{host}", super::Group::net_bits(*ip))
        }
        other => other.to_string(),
    }
}

/// A DOT string: quoted, with quotes, backslashes and control characters
/// escaped.
fn dot_quoted(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            c if c.is_control() => quoted.push(' '),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

fn dot(graph: &Graph) -> String {
    let mut out = String::from(
        "digraph netmon {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=11];\n  edge [fontname=\"Helvetica\", fontsize=9];\n",
    );
    for node in &graph.nodes {
        let style = if node.is_host() {
            "shape=box, style=\"filled,rounded\", fillcolor=\"#cfe2f3\""
        } else {
            "shape=ellipse, style=filled, fillcolor=\"#f3f3f3\""
        };
        let _ = writeln!(out, "  {} [{style}];", dot_quoted(&node_id(node)));
    }
    for (&(client, server), edge) in &graph.edges {
        let mut label = ports(edge).join(", ");
        let style = if graph.one_sided((client, server), edge) {
            let _ = write!(label, " ({} only)", observed_by(edge));
            ", style=dashed, color=\"#cc0000\", fontcolor=\"#cc0000\""
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {} -> {} [label={}{style}];",
            dot_quoted(&node_id(&graph.nodes[client])),
            dot_quoted(&node_id(&graph.nodes[server])),
            dot_quoted(&label)
        );
    }
    out.push_str("}\n");
    out
}

/// The edges as table rows, in (client, server) order.
struct Edges<'a> {
    graph: &'a Graph,
    rows: Vec<((usize, usize), &'a Edge)>,
    csv: bool,
}

impl<'a> Edges<'a> {
    fn all(graph: &'a Graph) -> Self {
        Self::matching(graph, |_| true)
    }

    fn matching(graph: &'a Graph, keep: impl Fn((usize, usize)) -> bool) -> Self {
        let rows = graph
            .edges
            .iter()
            .filter(|(key, _)| keep(**key))
            .map(|(key, edge)| (*key, edge))
            .collect();
        Self {
            graph,
            rows,
            csv: false,
        }
    }

    /// With the CSV header's names, and `one_sided` as true or false.
    fn for_csv(self) -> Self {
        Self { csv: true, ..self }
    }
}

/// The columns, as the text table and the CSV header name them.
const COLUMNS: [(&str, &str, Align); 10] = [
    ("CLIENT", "client", Align::Left),
    ("SERVER", "server", Align::Left),
    ("PORTS", "ports", Align::Left),
    ("SEEN BY", "observed_by", Align::Left),
    ("ONE-SIDED", "one_sided", Align::Left),
    ("CLIENT CONNECTIONS", "client_connections", Align::Right),
    ("SERVER CONNECTIONS", "server_connections", Align::Right),
    ("FIRST SEEN", "first_seen", Align::Left),
    ("LAST SEEN", "last_seen", Align::Left),
    ("OWNERS", "owners", Align::Left),
];

const TEXT_COLUMNS: [Column; 10] = columns(false);
const CSV_COLUMNS: [Column; 10] = columns(true);

const fn columns(csv: bool) -> [Column; 10] {
    let mut columns = [Column {
        header: "",
        align: Align::Left,
    }; 10];
    let mut index = 0;
    while index < columns.len() {
        let (text, csv_name, align) = COLUMNS[index];
        columns[index] = Column {
            header: if csv { csv_name } else { text },
            align,
        };
        index += 1;
    }
    columns
}

impl Table for Edges<'_> {
    fn columns(&self) -> &[Column] {
        if self.csv {
            &CSV_COLUMNS
        } else {
            &TEXT_COLUMNS
        }
    }

    fn rows(&self) -> usize {
        self.rows.len()
    }

    fn cell(&self, row: usize, column: usize, out: &mut String) {
        let ((client, server), edge) = self.rows[row];
        let both = [edge.by_client, edge.by_server];
        let _ = match column {
            0 => write!(out, "{}", self.graph.nodes[client]),
            1 => write!(out, "{}", self.graph.nodes[server]),
            2 => write!(out, "{}", ports(edge).join(" ")),
            3 => write!(out, "{}", observed_by(edge)),
            4 => {
                let one_sided = self.graph.one_sided((client, server), edge);
                let text = match (self.csv, one_sided) {
                    (true, true) => "true",
                    (true, false) => "false",
                    (false, true) => "yes",
                    (false, false) => "no",
                };
                write!(out, "{text}")
            }
            5 => edge
                .by_client
                .map_or(Ok(()), |seen| write!(out, "{}", seen.connections)),
            6 => edge
                .by_server
                .map_or(Ok(()), |seen| write!(out, "{}", seen.connections)),
            7 => both
                .iter()
                .flatten()
                .map(|seen| seen.first_seen)
                .min()
                .map_or(Ok(()), |time| write!(out, "{}", UnixTime::from_secs(time))),
            8 => both
                .iter()
                .flatten()
                .map(|seen| seen.last_seen)
                .max()
                .map_or(Ok(()), |time| write!(out, "{}", UnixTime::from_secs(time))),
            _ => {
                let owners: Vec<String> = edge
                    .owners
                    .iter()
                    .map(|owner| owner.escaped().to_string())
                    .collect();
                write!(out, "{}", owners.join(" "))
            }
        };
    }
}

/// The table; for `--host`, the edges into it, then the edges out of it.
fn text(graph: &Graph, host: Option<&str>, out: &mut impl Write) -> io::Result<()> {
    let Some(host) = host else {
        return write_text(out, &Edges::all(graph));
    };
    let me = graph
        .nodes
        .iter()
        .position(|node| matches!(node, Node::Host(name) if name == host));
    let into = Edges::matching(graph, |(_, server)| Some(server) == me);
    let from = Edges::matching(graph, |(client, _)| Some(client) == me);
    let host = Escaped::new(host);
    for (title, edges) in [
        (format!("WHO REACHES {host}, ON WHICH PORTS"), into),
        (format!("\nWHAT {host} REACHES"), from),
    ] {
        writeln!(out, "{title}")?;
        if edges.rows() == 0 {
            writeln!(out, "(nothing recorded)")?;
        } else {
            write_text(out, &edges)?;
        }
    }
    Ok(())
}
