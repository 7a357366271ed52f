//! Renderers: the IR as text.

pub mod nft;
