import Foundation
import XCTest
import KbuildCore
@testable import Sandbox

/// A node's persistent volume: a size the kernel enforces, owned by the
/// sandbox's root, kept across unmounts, deleted only when asked.
final class VolumeDiskTests: XCTestCase {
    func testAVolumeStopsWritesAtItsSizeKeepsItsDataAndBelongsToTheSandbox() async throws {
        let dir = Fixture.scratch("volumes")
        let disk = VolumeDisk(directory: dir, id: "py-data-0011aabb")
        let before = VolumeDisk.space(in: dir)!
        try await disk.ensure(size: 64 << 20, make: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertTrue(disk.isMounted)
        XCTAssertLessThanOrEqual(VolumeDisk.space(in: dir)!, before - (60 << 20), "the volume's size is promised, though the image is sparse")
        var st = stat()
        XCTAssertEqual(stat(disk.path, &st), 0)
        XCTAssertEqual(st.st_uid, IDRange.default.base, "the top belongs to the sandbox's root")
        XCTAssertTrue((try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)).split(separator: "\n").contains { line in
            line.contains(" \(disk.path) ") && line.contains("nosuid") && line.contains("nodev")
        })

        // Inside: root owns it without an idmap; a user writes there; past the size, ENOSPC, and the host's disk is untouched.
        let mount = SandboxMount(source: disk.path, target: "/data", readOnly: false, idmap: false)
        var out = try await sh("""
            ls -lnd /data | awk '{print $3}'; mkdir /data/pg && echo kept > /data/pg/row && chown -R 1000:1000 /data/pg
            dd if=/dev/zero of=/data/fill bs=1M count=100 2>&1; sync
            """) { $0.mounts = [mount] }
        XCTAssertEqual(out.result.termination, .exited(0), out.stderr)
        let lines = out.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.first, "0", "root inside owns the volume: \(out.stdout)")
        XCTAssertTrue(out.stdout.contains("No space left on device"), out.stdout)
        XCTAssertEqual(stat(disk.path + "/pg/row", &st), 0)
        XCTAssertEqual(st.st_uid, IDRange.default.base + 1000, "what a sandbox user writes is its unprivileged host id's")
        var image = stat()
        XCTAssertEqual(stat(disk.image, &image), 0)
        XCTAssertLessThanOrEqual(UInt64(image.st_blocks) * 512, 65 << 20, "the image never grows past the volume's size")

        // Unmounted (kbuild down) and mounted again (the next agent): the data is there.
        await disk.unmount()
        XCTAssertFalse(disk.isMounted)
        XCTAssertTrue(disk.exists)
        try await disk.ensure(size: 64 << 20, make: false)
        out = try await sh("cat /data/pg/row; rm /data/fill; echo more > /data/pg/more && echo wrote") { $0.mounts = [mount] }
        XCTAssertEqual(out.stdout, "kept\nwrote\n", out.stderr)
        XCTAssertEqual(VolumeDisk.all(in: dir).map(\.id), [disk.id])

        // Deleted for good: no mount, no image, no loop device left.
        try await disk.remove()
        XCTAssertFalse(disk.isMounted)
        XCTAssertFalse(disk.exists)
        XCTAssertFalse(FileManager.default.fileExists(atPath: disk.path))
        let loops = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        XCTAssertFalse(loops.contains(disk.path))
        // Made once, never again empty: its node says the disk is missing.
        do {
            try await disk.ensure(size: 64 << 20, make: false)
            XCTFail("a volume that was made was made again empty")
        } catch {
            XCTAssertTrue("\(error)".contains("not made again empty"), "\(error)")
        }
        XCTAssertFalse(disk.exists)
    }

    func testAVolumeInUseIsNotRemovedUnderItsWriter() async throws {
        let dir = Fixture.scratch("volumes")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let disk = VolumeDisk(directory: dir, id: "py-busy-0011aabb")
        try await disk.ensure(size: 32 << 20, make: true)
        // A sandbox that has it mounted: the host's unmount succeeds under its clone of the mount, but the disk is not deleted.
        let running = Task { try await sh("echo started > /data/started; sleep 30") {
            $0.mounts = [SandboxMount(source: disk.path, target: "/data", readOnly: false, idmap: false)]
        } }
        while !FileManager.default.fileExists(atPath: disk.path + "/started") { try await Task.sleep(for: .milliseconds(50)) }
        do {
            try await disk.remove()
            XCTFail("removed while a sandbox has it")
        } catch {
            XCTAssertTrue("\(error)".contains("in use"), "\(error)")
        }
        XCTAssertTrue(disk.exists)
        running.cancel()
        _ = try? await running.value
        try await disk.ensure(size: 32 << 20, make: false)
        XCTAssertTrue(FileManager.default.fileExists(atPath: disk.path + "/started"), "its data is there")
        // A file held open on it: umount fails (not lazily), remove says so, and the data stays.
        let fd = open(disk.path + "/held", O_CREAT | O_WRONLY | O_CLOEXEC, 0o600)
        XCTAssertGreaterThanOrEqual(fd, 0)
        do {
            try await disk.remove()
            XCTFail("removed while in use")
        } catch {
            XCTAssertTrue("\(error)".contains("in use"), "\(error)")
        }
        XCTAssertTrue(disk.exists)
        close(fd)
        try await disk.remove()
        XCTAssertFalse(disk.exists)
    }
}
