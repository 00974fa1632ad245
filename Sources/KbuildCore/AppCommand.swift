/// How an app's command is run, as Heroku runs a dyno's: `/bin/sh` sources
/// every `/app/.profile.d/*.sh` (where buildpacks put PATH and library
/// settings), then runs the command.
public enum AppCommand {
    static let profile = #"for f in /app/.profile.d/*.sh; do if [ -r "$f" ]; then . "$f"; fi; done; "#

    /// A Procfile command line (a shell command).
    public static func shell(_ command: String) -> [String] {
        ["/bin/sh", "-c", profile + #"exec /bin/sh -c "$0""#, command]
    }

    /// A command given as argv (a one-off run of one program); `missing` is
    /// said on stderr, with exit status 127, when the image has no such command.
    public static func argv(_ argv: [String], missing: String) -> [String] {
        ["/bin/sh", "-c", profile + #"command -v "$1" >/dev/null 2>&1 || { echo "$0" >&2; exit 127; }; exec "$@""#, missing] + argv
    }
}
