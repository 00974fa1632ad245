import ArgumentParser
import CGit2
import CArchive
import CZstd

enum KbuildVersion {
    static let text = "kbuild 0.1.0"
}

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print the versions of kbuild and the libraries it links, and the data dir in use.")
    @OptionGroup var global: GlobalOptions

    func run() {
        var major: Int32 = 0, minor: Int32 = 0, rev: Int32 = 0
        git_libgit2_version(&major, &minor, &rev)
        print(KbuildVersion.text)
        print("libgit2 \(major).\(minor).\(rev)")
        print(String(cString: archive_version_details()))
        print("zstd \(String(cString: ZSTD_versionString()))")
        print("data dir \(global.dir.root.path)")
    }
}
