//! What a frame says: the variable table, the values a source fills in, and the encoder that
//! turns them into upstream's JSON once per tick.

pub mod decode;
pub mod encoder;
pub mod table;

pub use encoder::{FrameEncoder, FrameHeader};
pub use table::{var, ValueKind, VarId, Variable, VARIABLES, VARIABLE_COUNT};

/// The values of one frame's `variables` object, indexed by [`VarId`].
///
/// Numbers live in one flat array so that a source can update them without allocating and the
/// encoder can walk them in wire order. Text values are only read for [`ValueKind::Text`] keys.
#[derive(Clone, Debug)]
pub struct Variables {
    numbers: Box<[f64]>,
    texts: Box<[String]>,
}

impl Default for Variables {
    fn default() -> Self {
        Self::new()
    }
}

impl Variables {
    /// All numbers 0, all strings empty.
    pub fn new() -> Self {
        Self {
            numbers: vec![0.0; VARIABLE_COUNT].into_boxed_slice(),
            texts: vec![String::new(); VARIABLE_COUNT].into_boxed_slice(),
        }
    }

    /// The number under `id` (0 for text keys).
    #[inline]
    pub fn number(&self, id: VarId) -> f64 {
        self.numbers[id.0]
    }

    /// Sets the number under `id`.
    #[inline]
    pub fn set(&mut self, id: VarId, value: f64) {
        debug_assert_eq!(
            VARIABLES[id.0].kind,
            ValueKind::Number,
            "{}",
            VARIABLES[id.0].name
        );
        self.numbers[id.0] = value;
    }

    /// The string under `id`.
    #[inline]
    pub fn text(&self, id: VarId) -> &str {
        &self.texts[id.0]
    }

    /// Sets the string under `id`, reusing its allocation.
    pub fn set_text(&mut self, id: VarId, value: &str) {
        debug_assert_eq!(
            VARIABLES[id.0].kind,
            ValueKind::Text,
            "{}",
            VARIABLES[id.0].name
        );
        let slot = &mut self.texts[id.0];
        if slot != value {
            slot.clear();
            slot.push_str(value);
        }
    }
}
