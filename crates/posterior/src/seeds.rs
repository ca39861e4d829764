//! Independent sub-seeds of one run seed (SplitMix64 of the seed and a purpose tag), so that
//! all randomness of a sampler call comes from its single seed.

/// Sub-seed `tag` of `seed`.
pub fn derive(seed: u64, tag: u64) -> u64 {
    let mut z = seed
        ^ tag
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub const WARM_START: u64 = 1;
pub const PCS: u64 = 2;
pub const DDS: u64 = 3;
pub const DPS: u64 = 4;
