//! A model keeps its binary open and reads it where needed: reads go on while the file is only
//! touched, and are refused, without a crash, once it holds another build or was cut short.

mod common;

use std::time::{Duration, SystemTime};

use escapade::tracee::gobin::{GoBinError, GoBinary};

#[test]
fn a_model_reads_its_file_only_while_it_holds_the_same_build() {
    for go in common::toolchains() {
        let what = &go.version;
        let bin = common::build(&go, "args", &[]);
        let path = bin.with_extension("model");
        std::fs::copy(&bin, &path).unwrap();
        let model = GoBinary::open(&path, None).unwrap();
        let main = model.resolve(&["main.main".into()]).unwrap().remove(0);
        let code = model.code(&main).unwrap();
        assert!(!code.is_empty(), "{what}");

        // As `go build` does to an output that is already up to date.
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(60))
            .unwrap();
        assert_eq!(model.code(&main).unwrap(), code, "{what}: touched");
        assert!(
            model.resolve(&["main.TracedPointers".into()]).is_ok(),
            "{what}: touched"
        );

        std::fs::write(
            &path,
            std::fs::read(common::build(&go, "profile", &[])).unwrap(),
        )
        .unwrap();
        assert!(changed(model.code(&main)), "{what}: another build");
        // DWARF is read again for a signature not asked for before.
        assert!(
            changed(model.resolve(&["main.Traced*".into()])),
            "{what}: another build's DWARF"
        );
        assert!(model.bytes_at(main.entry, 8).is_none(), "{what}");

        file.set_len(4096).unwrap();
        assert!(model.code(&main).is_err(), "{what}: cut short");
        std::fs::remove_file(&path).unwrap();
    }
}

fn changed<T>(result: Result<T, GoBinError>) -> bool {
    matches!(result, Err(GoBinError::Changed { .. }))
}
