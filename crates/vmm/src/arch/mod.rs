//! x86_64 specifics: guest physical layout, page tables and GDT for 64-bit entry, and
//! the Linux boot protocol (zero page, e820, command line, initramfs).

pub mod boot;
pub mod layout;
pub mod mptable;
pub mod paging;
