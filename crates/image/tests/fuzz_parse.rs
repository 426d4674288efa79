//! Property tests (run by `cargo test`): manifest, index, config, reference
//! and archive parsing never panic on arbitrary or mutated input.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use proptest::prelude::*;
use skiff_image::{manifest, store, Reference, Store};

const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","size":10},
"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","size":20}]}"#;

const CONFIG: &str = r#"{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]},
"rootfs":{"type":"layers","diff_ids":["sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"]}}"#;

fn mutate(base: &str, flips: &[(usize, u8)]) -> Vec<u8> {
    let mut b = base.as_bytes().to_vec();
    for (i, v) in flips {
        let i = i % b.len();
        b[i] = *v;
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn manifest_documents_never_panic(flips in proptest::collection::vec((0usize..1000, any::<u8>()), 0..8)) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let m = mutate(MANIFEST, &flips);
        let _ = manifest::kind_of(&m, None);
        let _ = manifest::parse_index(&m);
        if let Ok(parsed) = s.parse_manifest(&m) {
            let c = mutate(CONFIG, &flips);
            if let Ok((cfg, _)) = store::parse_config(&c) {
                let _ = store::layers_of(&parsed, &cfg);
            }
        }
    }

    #[test]
    fn arbitrary_json_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = manifest::kind_of(&bytes, Some("application/vnd.oci.image.index.v1+json"));
        if let Ok(i) = manifest::parse_index(&bytes) {
            let _ = manifest::select_platform(&i);
        }
        let _ = store::parse_config(&bytes);
    }

    #[test]
    fn references_never_panic(s in "\\PC{0,80}") {
        if let Ok(r) = Reference::parse(&s) {
            // Normalized output parses to itself.
            prop_assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
        }
    }

    #[test]
    fn archive_tars_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path().join("store")).unwrap();
        let f = d.path().join("a.tar");
        std::fs::write(&f, &bytes).unwrap();
        // Random bytes are never a valid archive; they must fail cleanly.
        prop_assert!(skiff_image::archive::load(&s, &f).is_err());
        prop_assert!(s.images().unwrap().is_empty());
    }
}
