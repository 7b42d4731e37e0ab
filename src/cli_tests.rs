use clap::{Arg, Command, CommandFactory};

use super::Cli;

/// The command as `esm` parses with it, built (global arguments propagated, help flags
/// added) and checked by clap's own debug assertions.
fn built() -> Command {
    Cli::command().debug_assert();
    let mut cmd = Cli::command();
    cmd.build();
    cmd
}

/// clap's own: the help and version flags and the generated `help` subcommand.
fn is_builtin_arg(arg: &Arg) -> bool {
    matches!(arg.get_id().as_str(), "help" | "version")
}

fn is_builtin_command(cmd: &Command) -> bool {
    cmd.get_name() == "help"
}

/// Calls `f` with every command under `cmd` (itself included) and its path, e.g.
/// `esm audit verify`.
fn each_command(cmd: &mut Command, path: &str, f: &mut dyn FnMut(&mut Command, &str)) {
    f(cmd, path);
    for sub in cmd.get_subcommands_mut() {
        if is_builtin_command(sub) {
            continue;
        }
        let sub_path = format!("{path} {}", sub.get_name());
        each_command(sub, &sub_path, f);
    }
}

fn text(s: Option<&clap::builder::StyledStr>) -> String {
    s.map(|s| s.to_string().trim().to_owned())
        .unwrap_or_default()
}

/// How the help output names an argument: `--name` for an option or flag, `<NAME>` (or
/// `[NAME]`) for a positional.
fn shown_as(arg: &Arg) -> String {
    match arg.get_long() {
        Some(long) => format!("--{long}"),
        None => arg
            .get_value_names()
            .and_then(|names| names.first())
            .map(|name| name.to_string())
            .unwrap_or_else(|| arg.get_id().as_str().to_uppercase()),
    }
}

#[test]
fn every_subcommand_and_argument_has_help() {
    let mut cmd = built();
    let mut missing = Vec::new();
    each_command(&mut cmd, "esm", &mut |cmd, path| {
        if text(cmd.get_about()).is_empty() && text(cmd.get_long_about()).is_empty() {
            missing.push(format!("`{path}` has no about text"));
        }
        for arg in cmd.get_arguments().filter(|a| !is_builtin_arg(a)) {
            if text(arg.get_help()).is_empty() && text(arg.get_long_help()).is_empty() {
                missing.push(format!(
                    "`{path}`: argument {} has no help text",
                    shown_as(arg)
                ));
            }
        }
    });
    assert!(missing.is_empty(), "missing help:\n{}", missing.join("\n"));
}

#[test]
fn every_subcommands_help_renders_and_names_each_argument() {
    let mut cmd = built();
    let mut problems = Vec::new();
    let mut seen = 0;
    each_command(&mut cmd, "esm", &mut |cmd, path| {
        seen += 1;
        let args: Vec<String> = cmd
            .get_arguments()
            .filter(|a| !is_builtin_arg(a) && !a.is_hide_set())
            .map(shown_as)
            .collect();
        for (flag, help) in [
            ("-h", cmd.render_help().to_string()),
            ("--help", cmd.render_long_help().to_string()),
        ] {
            if help.trim().is_empty() {
                problems.push(format!("`{path} {flag}` is empty"));
                continue;
            }
            for arg in &args {
                if !help.contains(arg.as_str()) {
                    problems.push(format!("`{path} {flag}` does not mention {arg}"));
                }
            }
        }
    });
    // The root, its nine subcommands and theirs (31 today): a walk that found far fewer
    // did not reach the nested subcommands.
    assert!(seen >= 20, "walked only {seen} commands");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_serve_help_names_everything_serve_runs() {
    let mut cmd = built();
    let serve = cmd
        .find_subcommand_mut("serve")
        .expect("a serve subcommand");
    let help = serve.render_long_help().to_string();
    for part in [
        "CA",
        "rotation",
        "SDS",
        "Workload API",
        "agent socket",
        "ext_authz",
        "audit",
        "admin",
    ] {
        assert!(
            help.contains(part),
            "serve --help does not mention {part}:\n{help}"
        );
    }
}
