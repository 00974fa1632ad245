import NIOCore
import NIOHTTP1

/// What goes out to the client: bytes on an HTTP/1 connection, `HTTPServerResponsePart`s on an HTTP/2
/// stream. A backend's head is forwarded as bytes (`forwardHead`); the router's own heads (its pages,
/// 100 Continue) are serialized here.
extension ClientHandler {
    /// One of the router's own response heads.
    func writeHead(_ head: HTTPResponseHead, context: ChannelHandlerContext) {
        switch output {
        case .http2Stream:
            context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
        case .http1:
            var out = context.channel.allocator.buffer(capacity: 256)
            out.writeStaticString(head.version.minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ")
            out.writeString(String(head.status.code))
            out.writeStaticString(" ")
            out.writeString(head.status.reasonPhrase)
            out.writeStaticString("\r\n")
            for (name, value) in head.headers {
                out.writeString(name)
                out.writeStaticString(": ")
                out.writeString(value)
                out.writeStaticString("\r\n")
            }
            out.writeStaticString("\r\n")
            context.write(NIOAny(out), promise: nil)
        }
    }

    /// The backend's head, as the client gets it: hop-by-hop fields out; the request ids and the
    /// client's own framing and connection fields in. Decides how the body goes on (`rechunk`,
    /// `BackendConnection.unchunk`) and whether the client's connection outlives the response.
    /// A body up to this size that came whole with its head goes out in the head's buffer: one write.
    static let bodyWithHeadLimit = 16 << 10

    /// Returns how many bytes of the body went out with the head.
    func forwardHead(
        _ head: ResponseHead, bytes: ByteBuffer, framing: ResponseHead.Framing, connection: BackendConnection,
        context: ChannelHandlerContext
    ) -> Int {
        rechunk = false
        switch output {
        case .http2Stream:
            connection.unchunk = framing == .chunked
            var headers = bytes.withUnsafeReadableBytes { head.headers(from: $0) }
            headers.add(name: "x-request-id", value: requestID)
            if traceID != requestID { headers.add(name: "kbuild-request-id", value: traceID) }
            let status = HTTPResponseStatus(statusCode: head.status)
            context.write(NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            return 0
        case .http1:
            var keepAliveField = false
            if isHTTP10 {
                // An HTTP/1.0 client keeps its connection only when the body has a length, and takes no chunks.
                switch framing {
                case .none, .length: keepAliveField = clientKeepAlive
                case .chunked: connection.unchunk = true; clientKeepAlive = false
                case .untilClose: clientKeepAlive = false
                }
            } else if framing == .untilClose {
                rechunk = true
            }
            if quiescing { clientKeepAlive = false }
            var body = 0
            if case .length(let length) = framing, length <= Self.bodyWithHeadLimit, bytes.readableBytes - head.length >= length {
                body = length
            }
            var out = context.channel.allocator.buffer(capacity: head.length + 160 + body)
            bytes.withUnsafeReadableBytes { raw in
                head.write(from: raw, into: &out, http10: isHTTP10, keepTransferEncoding: !isHTTP10, keepUpgrade: false) { out in
                    self.writeTrailingFields(into: &out, keepAlive: keepAliveField)
                }
                if body > 0 { out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[head.length..<(head.length + body)])) }
            }
            context.write(NIOAny(out), promise: nil)
            return body
        }
    }

    /// The request ids every forwarded response carries: the one the app saw, and the router's own when
    /// the client chose the other.
    private func writeRequestIDs(into out: inout ByteBuffer) {
        out.writeStaticString("x-request-id: ")
        out.writeString(requestID)
        out.writeStaticString("\r\n")
        if traceID != requestID {
            out.writeStaticString("kbuild-request-id: ")
            out.writeString(traceID)
            out.writeStaticString("\r\n")
        }
    }

    /// The fields the router adds to every response it forwards.
    private func writeTrailingFields(into out: inout ByteBuffer, keepAlive: Bool) {
        writeRequestIDs(into: &out)
        if rechunk { out.writeStaticString("transfer-encoding: chunked\r\n") }
        if !clientKeepAlive {
            out.writeStaticString("connection: close\r\n")
        } else if keepAlive {
            out.writeStaticString("connection: keep-alive\r\n")
        }
    }

    /// A 101's head: the backend's fields with its `Upgrade`, and `Connection: upgrade`.
    func switchingProtocolsHead(_ head: ResponseHead, bytes: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = allocator.buffer(capacity: head.length + 128)
        bytes.withUnsafeReadableBytes { raw in
            head.write(from: raw, into: &out, http10: false, keepTransferEncoding: false, keepUpgrade: true) { out in
                out.writeStaticString("connection: upgrade\r\n")
                self.writeRequestIDs(into: &out)
            }
        }
        return out
    }

    /// Part of a body: the backend's bytes as they came (chunks included), its data in chunks of the
    /// router's when it had no framing, or a body part for the HTTP/2 codec.
    func writeBody(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        switch output {
        case .http2Stream:
            context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(buffer))), promise: nil)
        case .http1 where rechunk:
            guard buffer.readableBytes > 0 else { return }
            context.write(NIOAny(ChunkedScanner.sizeLine(buffer.readableBytes)), promise: nil)
            context.write(NIOAny(buffer), promise: nil)
            context.write(NIOAny(ByteBuffer(staticString: "\r\n")), promise: nil)
        case .http1:
            context.write(NIOAny(buffer), promise: nil)
        }
    }

    /// The end of a response (the last chunk of a re-chunked body; the end part on HTTP/2), flushed.
    /// On HTTP/1 with nothing left to write, an empty write still completes `promise` in order.
    func writeEnd(context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        switch output {
        case .http2Stream:
            context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: promise)
        case .http1 where rechunk:
            rechunk = false
            context.writeAndFlush(NIOAny(ByteBuffer(staticString: "0\r\n\r\n")), promise: promise)
        case .http1:
            if let promise {
                context.writeAndFlush(NIOAny(context.channel.allocator.buffer(capacity: 0)), promise: promise)
            } else {
                context.flush()
            }
        }
    }
}
