import Foundation
import Router
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// A python3 backend on 127.0.0.1 with a free port, spawned with posix_spawn and reaped on stop.
final class TestBackend {
    let name: String
    let port: Int
    private let pid: pid_t
    private let directory: URL

    init(name: String, idleTimeout: Double? = nil) throws {
        self.name = name
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("router-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let script = directory.appendingPathComponent("backend.py")
        try backendScript.write(to: script, atomically: true, encoding: .utf8)
        let portFile = directory.appendingPathComponent("port").path
        var arguments = ["python3", script.path, name, portFile]
        if let idleTimeout { arguments.append(String(idleTimeout)) }
        pid = try spawn(arguments)
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if let text = try? String(contentsOfFile: portFile, encoding: .utf8), let port = Int(text) {
                self.port = port
                return
            }
            usleep(20_000)
        }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        throw TestError("backend \(name) did not start within 10 s")
    }

    var endpoint: Endpoint { Endpoint(host: "127.0.0.1", port: port, process: "\(name).web.1") }

    /// The request lines the backend read, in order (`GET /path`).
    var requestLines: [String] {
        ((try? String(contentsOf: directory.appendingPathComponent("port.requests"), encoding: .utf8)) ?? "")
            .split(separator: "\n").map(String.init)
    }

    /// The close codes the backend's WebSockets received, in order.
    var webSocketCloses: [Int] {
        ((try? String(contentsOf: directory.appendingPathComponent("port.closes"), encoding: .utf8)) ?? "")
            .split(separator: "\n").compactMap { Int($0) }
    }

    func stop() {
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        try? FileManager.default.removeItem(at: directory)
    }
}

struct TestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func spawn(_ arguments: [String]) throws -> pid_t {
    var pid: pid_t = 0
    let argv = arguments.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    let result = posix_spawnp(&pid, arguments[0], nil, nil, argv, environ)
    guard result == 0 else { throw TestError("posix_spawnp(\(arguments[0])) failed: \(result)") }
    return pid
}

/// A free TCP port on 127.0.0.1 that nothing listens on.
func unusedPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
        }
    }
    guard bound else { throw TestError("bind(127.0.0.1:0) failed") }
    return Int(UInt16(bigEndian: address.sin_port))
}
