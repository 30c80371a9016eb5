#[test]
fn a_backup_stream_is_a_sequence_of_frames_that_decodes_as_one() {
    let input: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let mut e = FramedEncoder::new(Vec::new(), 3, 1, 4096).unwrap();
    for chunk in input.chunks(1500) {
        e.write_all(chunk).unwrap();
    }
    let out = e.finish().unwrap();
    let mut frames = 0;
    let mut rest = &out[..];
    while !rest.is_empty() {
        let n = zstd::zstd_safe::find_frame_compressed_size(rest).unwrap();
        rest = &rest[n..];
        frames += 1;
    }
    assert_eq!(frames, input.len().div_ceil(4096));
    assert_eq!(zstd::stream::decode_all(&out[..]).unwrap(), input);
}

use super::*;

#[test]
fn labels_are_checked() {
    assert!(validate_label("pre-deploy").is_ok());
    assert!(validate_label("nightly_2.0").is_ok());
    for bad in ["", "../x", "a b", ".hidden", "x/y"] {
        assert!(validate_label(bad).is_err(), "{bad}");
    }
}

#[test]
fn ids_get_a_suffix_when_taken() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::new(dir.path());
    let at: Timestamp = "2026-11-29T10:20:30Z".parse().unwrap();
    let free = |_: &str| false;
    let id = unique_id(&catalog, "manual", at, Some("0123456789abcdef"), free);
    assert_eq!(id, "manual_20261129_102030_0123456");
    std::fs::write(dir.path().join(format!("{id}{DATA_SUFFIX}")), b"x").unwrap();
    assert_eq!(
        unique_id(&catalog, "manual", at, None, free),
        "manual_20261129_102030_manual"
    );
    assert_eq!(
        unique_id(&catalog, "manual", at, Some("0123456789abcdef"), free),
        "manual_20261129_102030_0123456_2"
    );
    // An id a shared remote holds is taken as well.
    assert_eq!(
        unique_id(&catalog, "manual", at, None, |id| id
            == "manual_20261129_102030_manual"),
        "manual_20261129_102030_manual_2"
    );
}
