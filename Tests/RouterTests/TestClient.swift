import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A response as a test client read it off the wire.
struct TestResponse {
    var status: Int
    /// Header names lowercased; a repeated header keeps its last value.
    var headers: [String: String]
    var body: [UInt8]

    var text: String { String(decoding: body, as: UTF8.self) }

    func json() throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            throw TestError("response body is not a JSON object: \(text.prefix(200))")
        }
        return object
    }

    /// The request headers the test backend saw, from its JSON answer.
    func backendHeaders() throws -> [String: String] {
        try json()["headers"] as? [String: String] ?? [:]
    }
}

/// A blocking HTTP/1.1 client connection over a plain socket, so tests control
/// exactly what goes on the wire (keep-alive, HTTP/1.0, chunked bodies).
final class TestConnection {
    private let fd: Int32
    private var buffer: [UInt8] = []
    private var atEOF = false

    init(port: Int, timeoutSeconds: Int = 15) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard connected else {
            close(fd)
            throw TestError("connect(127.0.0.1:\(port)) failed: errno \(errno)")
        }
    }

    deinit { close(fd) }

    func send(_ text: String) throws {
        try send(Array(text.utf8))
    }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard written > 0 else { throw TestError("send failed: errno \(errno)") }
            offset += written
        }
    }

    /// Sends a request with Content-Length framing (or none without a body).
    func request(
        _ method: String = "GET", _ path: String = "/", host: String?, headers: [(String, String)] = [],
        body: [UInt8]? = nil, version: String = "HTTP/1.1"
    ) throws -> TestResponse {
        var head = "\(method) \(path) \(version)\r\n"
        if let host { head += "Host: \(host)\r\n" }
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if let body { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        try send(Array(head.utf8) + (body ?? []))
        return try readResponse(method: method)
    }

    /// Reads one response; `onBody` sees the body as it arrives, and the body is
    /// kept only when `keepBody`.
    func readResponse(method: String = "GET", keepBody: Bool = true, onBody: (ArraySlice<UInt8>) -> Void = { _ in })
        throws -> TestResponse
    {
        let (status, headers) = try readHead()
        var body: [UInt8] = []
        func take(_ count: Int) throws {
            var left = count
            while left > 0 {
                if buffer.isEmpty { try fill() }
                let piece = buffer.prefix(left)
                onBody(piece)
                if keepBody { body.append(contentsOf: piece) }
                buffer.removeFirst(piece.count)
                left -= piece.count
            }
        }
        if method == "HEAD" || status == 204 || status == 304 || (100..<200).contains(status) {
        } else if headers["transfer-encoding"]?.lowercased() == "chunked" {
            while true {
                let lineEnd = try readUntil([13, 10])
                let sizeText = String(decoding: buffer[..<lineEnd], as: UTF8.self).split(separator: ";")[0]
                buffer.removeFirst(lineEnd + 2)
                guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else {
                    throw TestError("bad chunk size \(sizeText)")
                }
                if size == 0 {
                    while try readUntil([13, 10]) != 0 { buffer.removeFirst(try readUntil([13, 10]) + 2) }
                    buffer.removeFirst(2)
                    break
                }
                try take(size)
                buffer.removeFirst(try readUntil([13, 10]) + 2)
            }
        } else if let length = headers["content-length"].flatMap({ Int($0) }) {
            try take(length)
        } else {
            while true {
                if buffer.isEmpty {
                    do { try fill() } catch { if atEOF { break } else { throw error } }
                }
                onBody(buffer[...])
                if keepBody { body.append(contentsOf: buffer) }
                buffer.removeAll()
            }
        }
        return TestResponse(status: status, headers: headers, body: body)
    }

    /// A response head only (a 101's): what follows stays to be read.
    func readHead() throws -> (status: Int, headers: [String: String]) {
        let headEnd = try readUntil([13, 10, 13, 10])
        let head = String(decoding: buffer[..<headEnd], as: UTF8.self)
        buffer.removeFirst(headEnd + 4)
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw TestError("bad status line: \(head)") }
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return (status, headers)
    }

    /// The next `count` bytes, as they come.
    func readBytes(_ count: Int) throws -> [UInt8] {
        while buffer.count < count { try fill() }
        defer { buffer.removeFirst(count) }
        return Array(buffer[..<count])
    }

    /// One unfragmented WebSocket frame from a server (unmasked): its opcode and payload.
    func readFrame() throws -> (opcode: UInt8, payload: [UInt8]) {
        let head = try readBytes(2)
        var size = Int(head[1] & 0x7f)
        if size == 126 {
            size = try readBytes(2).reduce(0) { $0 << 8 | Int($1) }
        } else if size == 127 {
            size = try readBytes(8).reduce(0) { $0 << 8 | Int($1) }
        }
        return (head[0] & 0x0f, try readBytes(size))
    }

    /// Sends one masked WebSocket frame, as a client must.
    func sendFrame(opcode: UInt8, _ payload: [UInt8]) throws {
        let mask: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        var frame: [UInt8] = [0x80 | opcode]
        if payload.count < 126 {
            frame.append(0x80 | UInt8(payload.count))
        } else {
            frame += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xff)]
        }
        frame += mask
        frame += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        try send(frame)
    }

    /// Whether the peer closed the connection (reads EOF within the timeout).
    func isClosedByPeer() -> Bool {
        do {
            while true { try fill() }
        } catch {
            return atEOF
        }
    }

    private func readUntil(_ marker: [UInt8]) throws -> Int {
        var searchFrom = 0
        while true {
            if buffer.count >= marker.count {
                for index in searchFrom...(buffer.count - marker.count) where buffer[index] == marker[0] {
                    if Array(buffer[index..<(index + marker.count)]) == marker { return index }
                }
                searchFrom = buffer.count - marker.count + 1
            }
            try fill()
        }
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 256 * 1024)
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count == 0 {
            atEOF = true
            throw TestError("connection closed by peer")
        }
        guard count > 0 else { throw TestError("recv failed: errno \(errno)") }
        buffer.append(contentsOf: chunk[..<count])
    }
}

/// One request on its own connection.
func fetch(
    port: Int, _ method: String = "GET", _ path: String = "/", host: String?, headers: [(String, String)] = [],
    body: [UInt8]? = nil
) throws -> TestResponse {
    try TestConnection(port: port).request(method, path, host: host, headers: headers, body: body)
}
