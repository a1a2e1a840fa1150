//! `--help` says what each command and option takes: rendered in-process from the same
//! definitions the binary parses with.

use clap::{CommandFactory, Parser};
use vtriage::cli::{Cli, Command};
use vtriage::ingest::Format;

/// The long help (`--help`) of the command at `path`, e.g. `["vt", "file"]`.
fn help(path: &[&str]) -> String {
    let mut cmd = Cli::command();
    // Global options reach the subcommands when the command is built.
    cmd.build();
    let mut sub = &mut cmd;
    for name in path {
        sub = sub.find_subcommand_mut(name).expect(name);
    }
    sub.render_long_help().to_string()
}

#[test]
fn ingest_lists_the_formats_it_can_be_forced_to() {
    let text = help(&["ingest"]);
    for f in Format::ALL {
        assert!(text.contains(&format!("- {f}:")), "{f} missing: {text}");
    }
    // Names and aliases parse in any case; anything else is refused with the list.
    let format =
        |name: &str| match Cli::try_parse_from(["vtriage", "ingest", "--format", name, "x"]) {
            Ok(Cli {
                command: Command::Ingest(args),
                ..
            }) => Ok(args.format),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
    assert_eq!(format("TSV"), Ok(Some(Format::Csv)));
    assert_eq!(format("openioc"), Ok(Some(Format::OpenIoc)));
    let refused = format("yaml").unwrap_err();
    assert!(
        refused.contains("expected one of text, loki, csv"),
        "{refused}"
    );
}

#[test]
fn each_vt_object_command_says_what_id_it_takes() {
    let takes = [
        ("file", "The file's MD5, SHA-1 or SHA-256"),
        ("url", "or its VirusTotal URL id"),
        ("domain", "The domain (defanged forms"),
        ("ip", "The IP address (defanged forms"),
    ];
    for (command, id) in takes {
        let text = help(&["vt", command]);
        assert!(text.contains(id), "vt {command}: {text}");
        for (other, other_id) in takes {
            if other != command {
                assert!(!text.contains(other_id), "vt {command} says {other_id:?}");
            }
        }
    }
}

#[test]
fn db_says_that_the_configuration_file_comes_before_its_default() {
    let text = help(&["status"]);
    assert!(
        text.contains(
            "[default: the configuration file's `db` (relative to the working directory, not to \
             the file), else ~/.local/share/vtriage/vtriage.db ($XDG_DATA_HOME/vtriage/vtriage.db); \
             never one in the working directory unless named]"
        ),
        "{text}"
    );
}

#[test]
fn sim_documents_its_request_counters() {
    let text = help(&["sim"]);
    for said in ["GET /_sim/stats", "\"api_requests\"", "\"max_in_window\""] {
        assert!(text.contains(said), "{said} missing: {text}");
    }
}

#[test]
fn recheck_wait_says_it_waits_for_earlier_rechecks_too() {
    let text = help(&["recheck"]);
    assert!(
        text.contains("those an earlier recheck queued included"),
        "{text}"
    );
}
