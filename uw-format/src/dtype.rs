//! Element types, with the codes of spec/uw-v1.md ("dtype codes").

/// An element type. Names and bit widths are those of safetensors.
#[allow(non_camel_case_types, missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Dtype {
    BOOL = 1,
    U8 = 2,
    I8 = 3,
    F8_E5M2 = 4,
    F8_E4M3 = 5,
    F8_E8M0 = 6,
    F8_E4M3FNUZ = 7,
    F8_E5M2FNUZ = 8,
    I16 = 9,
    U16 = 10,
    F16 = 11,
    BF16 = 12,
    I32 = 13,
    U32 = 14,
    F32 = 15,
    C64 = 16,
    F64 = 17,
    I64 = 18,
    U64 = 19,
    F4 = 20,
    F6_E2M3 = 21,
    F6_E3M2 = 22,
}

const ALL: [Dtype; 22] = [
    Dtype::BOOL,
    Dtype::U8,
    Dtype::I8,
    Dtype::F8_E5M2,
    Dtype::F8_E4M3,
    Dtype::F8_E8M0,
    Dtype::F8_E4M3FNUZ,
    Dtype::F8_E5M2FNUZ,
    Dtype::I16,
    Dtype::U16,
    Dtype::F16,
    Dtype::BF16,
    Dtype::I32,
    Dtype::U32,
    Dtype::F32,
    Dtype::C64,
    Dtype::F64,
    Dtype::I64,
    Dtype::U64,
    Dtype::F4,
    Dtype::F6_E2M3,
    Dtype::F6_E3M2,
];

impl Dtype {
    /// Every dtype, in code order.
    pub const ALL: [Dtype; 22] = ALL;

    /// The dtype with this code, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        ALL.get(usize::from(code).checked_sub(1)?).copied()
    }

    /// The on-disk code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Bits per element.
    pub fn bits(self) -> u64 {
        use Dtype::*;
        match self {
            F4 => 4,
            F6_E2M3 | F6_E3M2 => 6,
            BOOL | U8 | I8 | F8_E5M2 | F8_E4M3 | F8_E8M0 | F8_E4M3FNUZ | F8_E5M2FNUZ => 8,
            I16 | U16 | F16 | BF16 => 16,
            I32 | U32 | F32 => 32,
            C64 | F64 | I64 | U64 => 64,
        }
    }

    /// The safetensors name (`"BF16"`, `"F32"`, ...).
    pub fn name(self) -> &'static str {
        use Dtype::*;
        match self {
            BOOL => "BOOL",
            U8 => "U8",
            I8 => "I8",
            F8_E5M2 => "F8_E5M2",
            F8_E4M3 => "F8_E4M3",
            F8_E8M0 => "F8_E8M0",
            F8_E4M3FNUZ => "F8_E4M3FNUZ",
            F8_E5M2FNUZ => "F8_E5M2FNUZ",
            I16 => "I16",
            U16 => "U16",
            F16 => "F16",
            BF16 => "BF16",
            I32 => "I32",
            U32 => "U32",
            F32 => "F32",
            C64 => "C64",
            F64 => "F64",
            I64 => "I64",
            U64 => "U64",
            F4 => "F4",
            F6_E2M3 => "F6_E2M3",
            F6_E3M2 => "F6_E3M2",
        }
    }

    /// The dtype with this safetensors name.
    pub fn from_name(name: &str) -> Option<Self> {
        ALL.iter().copied().find(|d| d.name() == name)
    }
}

impl core::fmt::Display for Dtype {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for d in Dtype::ALL {
            assert_eq!(Dtype::from_code(d.code()), Some(d));
            assert_eq!(Dtype::from_name(d.name()), Some(d));
        }
        assert_eq!(Dtype::from_code(0), None);
        assert_eq!(Dtype::from_code(23), None);
    }
}
