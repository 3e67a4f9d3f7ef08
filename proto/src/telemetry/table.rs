//! The variable table (wire order) and the command-name table, generated from `data/*.tsv`.

/// Index of a variable in [`VARIABLES`], i.e. its position on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VarId(pub usize);

/// What a variable carries on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// A JSON number (vector components included: `Name.X`, `Name.Y`, `Name.Z`).
    Number,
    /// A JSON string (aircraft name, identifiers, autopilot modes).
    Text,
}

/// One key of a frame's `variables` object.
#[derive(Clone, Copy, Debug)]
pub struct Variable {
    /// The key, e.g. `Aircraft.Altitude`.
    pub name: &'static str,
    /// Number or string.
    pub kind: ValueKind,
    /// The simulator SDK's unit (empty where upstream does not know it).
    pub unit: &'static str,
    /// Whether a command may set it.
    pub writable: bool,
    /// Upstream's one-line description.
    pub description: &'static str,
}

/// SDK access of a command name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read only: commands are rejected.
    Read,
    /// Write only (events, inputs).
    Write,
    /// Readable and writable.
    ReadWrite,
}

impl Access {
    /// Whether a command may set a name with this access.
    pub fn is_writable(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

/// One command name upstream's parser accepts.
#[derive(Clone, Copy, Debug)]
pub struct CommandName {
    /// The name a client sends.
    pub name: &'static str,
    /// The SDK message it addresses; differs from `name` for upstream's aliases.
    pub target: &'static str,
    /// SDK flag: value, event, toggle, step, move, none.
    pub flag: &'static str,
    /// SDK access.
    pub access: Access,
    /// SDK unit.
    pub unit: &'static str,
    /// The telemetry key that shows `target`, when frames carry it.
    pub telemetry: Option<VarId>,
}

include!(concat!(env!("OUT_DIR"), "/reference.rs"));

/// Looks up a command name (exact, case-sensitive, as upstream).
pub fn command_name(name: &str) -> Option<&'static CommandName> {
    COMMAND_NAMES
        .binary_search_by(|c| c.name.cmp(name))
        .ok()
        .map(|i| &COMMAND_NAMES[i])
}

/// Looks up a telemetry key by name (linear; not for hot paths).
pub fn variable_id(name: &str) -> Option<VarId> {
    VARIABLES.iter().position(|v| v.name == name).map(VarId)
}

/// The known name (a telemetry key or a command name) a wrong one probably meant: the same
/// name in another case, else the nearest within two edits (a typo). `None` when nothing is
/// that close.
pub fn did_you_mean(name: &str) -> Option<&'static str> {
    if name.len() > 96 {
        return None;
    }
    let known = || {
        VARIABLES
            .iter()
            .map(|v| v.name)
            .chain(COMMAND_NAMES.iter().map(|c| c.name))
    };
    if let Some(same) = known().find(|k| k.eq_ignore_ascii_case(name)) {
        return Some(same);
    }
    known()
        .filter(|k| k.len().abs_diff(name.len()) <= 2)
        .map(|k| (edits(name.as_bytes(), k.as_bytes()), k))
        .filter(|&(d, _)| d <= 2)
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Levenshtein distance (insertions, deletions, substitutions), ASCII case-insensitive.
fn edits(a: &[u8], b: &[u8]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca.eq_ignore_ascii_case(cb) {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_case_or_a_typo_finds_the_name_meant() {
        assert_eq!(did_you_mean("controls.throttle"), Some("Controls.Throttle"));
        assert_eq!(did_you_mean("Aircraft.Altitud"), Some("Aircraft.Altitude"));
        assert_eq!(did_you_mean("Aircraft.Altitdue"), Some("Aircraft.Altitude"));
        assert_eq!(did_you_mean("Nope.Nothing"), None);
        assert_eq!(did_you_mean(&"x".repeat(200)), None);
    }

    #[test]
    fn table_matches_reference_order_with_duplicates_once() {
        assert_eq!(VARIABLE_COUNT, 361);
        assert_eq!(VARIABLES[0].name, "Aircraft.UniversalTime");
        assert_eq!(
            VARIABLES[VARIABLE_COUNT - 1].name,
            "Aircraft.BestRunwayEnd.Z"
        );
        // The two names upstream sends twice stay at their first position.
        assert_eq!(
            VARIABLES[var::CONTROLS_MAGNETOS1.0].name,
            "Controls.Magnetos1"
        );
        assert_eq!(var::CONTROLS_MAGNETOS1.0, 172);
        assert_eq!(var::CONTROLS_PARKING_BRAKE.0, 199);
        let mut names: Vec<_> = VARIABLES.iter().map(|v| v.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), VARIABLE_COUNT);
        assert_eq!(
            VARIABLES
                .iter()
                .filter(|v| v.kind == ValueKind::Text)
                .count(),
            20
        );
    }

    #[test]
    fn command_lookup_and_aliases() {
        assert_eq!(COMMAND_NAMES.len(), 290);
        let t = command_name("Controls.Throttle").unwrap();
        assert_eq!(t.access, Access::Write);
        assert!(t.telemetry.is_none());
        let alias = command_name("Controls.PropellerSpeed.2").unwrap();
        assert_eq!(alias.target, "Controls.PropellerSpeed2");
        let com = command_name("Communication.COM1Frequency").unwrap();
        assert_eq!(com.telemetry, Some(var::COMMUNICATION_COM1_FREQUENCY));
        assert!(command_name("controls.throttle").is_none());
        assert_eq!(var::AIRCRAFT_APU_AVAILABLE.0, 70);
        assert_eq!(var::NAVIGATION_NAV1_FREQUENCY.0, 93);
    }
}
