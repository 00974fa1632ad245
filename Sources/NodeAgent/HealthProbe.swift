import Foundation
import KbuildState

/// One health check of one process: the port accepts a connection, or (with
/// a path) an HTTP GET of it answers 2xx or 3xx, within the check's timeout;
/// with `answersRequest`, a GET of that path gets any answer at all (the app
/// is up, whatever it makes of `/` and whatever it speaks: any status, a TLS
/// alert, an HTTP/2 preface, a close). Blocking sockets on a thread of its
/// own, so a hung app holds no task thread.
enum HealthProbe {
    static func check(host: String, port: Int, check: HealthCheck, answersRequest: String? = nil) async -> Bool {
        await withCheckedContinuation { continuation in
            let thread = Thread { continuation.resume(returning: probe(host: host, port: port, check: check, answersRequest: answersRequest)) }
            thread.name = "kbuild-health"
            thread.start()
        }
    }

    static func probe(host: String, port: Int, check: HealthCheck, answersRequest: String? = nil) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { return false }
        let deadline = ContinuousClock.now + .milliseconds(Int(check.timeout * 1000))
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        if rc != 0 {
            guard errno == EINPROGRESS, wait(fd, for: Int16(POLLOUT), until: deadline) else { return false }
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0, err == 0 else { return false }
        }
        guard let path = answersRequest ?? check.path else { return true }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: localhost\r\nUser-Agent: kbuild-health\r\n\r\n".utf8)
        var sent = 0
        while sent < request.count {
            guard wait(fd, for: Int16(POLLOUT), until: deadline) else { return false }
            let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return false }
            sent += n
        }
        // "HTTP/1.x NNN": the first 12 bytes say it.
        var head: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 512)
        while head.count < 12 {
            guard wait(fd, for: Int16(POLLIN), until: deadline) else { return false }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            // Any answer, a close included, is a server at work.
            if answersRequest != nil { return n >= 0 }
            guard n > 0 else { return false }
            head += buffer[0..<n]
        }
        let text = String(decoding: head.prefix(12), as: UTF8.self)
        guard text.hasPrefix("HTTP/1."), let code = Int(text.dropFirst(9).prefix(3)) else { return false }
        return (200..<400).contains(code)
    }

    private static func wait(_ fd: Int32, for events: Int16, until deadline: ContinuousClock.Instant) -> Bool {
        while true {
            let left = deadline - .now
            guard left > .zero else { return false }
            var p = pollfd(fd: fd, events: events, revents: 0)
            let ms = Int32(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000) + 1
            let n = poll(&p, 1, ms)
            if n < 0 && errno == EINTR { continue }
            return n > 0 && p.revents & events != 0
        }
    }
}
