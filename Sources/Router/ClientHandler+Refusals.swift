import NIOCore
import NIOHTTP1

/// What the router refuses mid-request: a head the decoder could not take, a body it will not pass on.
extension ClientHandler {
    /// A request the decoder could not take: too large a head (431), or malformed (400). The
    /// connection cannot go on (its bytes are not understood): answer when no response is under
    /// way, and close.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.close(promise: nil)
            return
        }
        let why = "The request is not valid HTTP/1.1 (\(parserError))."
        switch phase {
        case .idle, .answering:
            break
        case .connecting where requestEnded, .awaitingResponse where requestEnded, .streamingResponse where requestEnded:
            // The request under way is whole; what follows it is not HTTP: its response finishes, then the
            // connection closes (nothing more of it is read).
            clientKeepAlive = false
            discardsInput = true
            return
        case .connecting, .awaitingResponse:
            // A body that turned out malformed (a bad chunk size): the backend got only its good part,
            // and the exchange ends with 400 instead of waiting for the rest.
            clientKeepAlive = false
            requestEnded = false
            fail(.badRequest(why))
            return
        case .streamingResponse:
            cut(.refused)
            return
        case .closing:
            return
        }
        requestID = RequestID.generate(using: &pool.random)
        traceID = requestID
        method = .GET
        uri = ""
        app = nil
        requestEnded = false
        clientKeepAlive = false
        started = .now()
        if case .headerOverflow = parserError {
            answer(.headersTooLarge(
                "The request head is larger than \(shared.configuration.maxHeaderBytes) bytes or has more than \(shared.configuration.maxHeaderFields) fields."))
        } else {
            answer(.badRequest(why))
        }
    }

    /// A request body the router will not pass on (no framing, over the limit): its page when no response
    /// began, else the connection is cut. Either way the backend connection is not reused.
    func refuseBody(_ page: ErrorPage) {
        clientKeepAlive = false
        switch phase {
        case .connecting, .awaitingResponse:
            fail(page)
        case .streamingResponse:
            cut(.refused)
        case .idle, .answering, .closing:
            break
        }
    }

    /// Ends the exchange under way by closing the connection: part of the response is out, so a close is
    /// all the client can be told.
    func cut(_ error: RouterError) {
        exchangeError = error
        if let backend {
            self.backend = nil
            pool.release(backend, reusable: false, snapshot: snapshot)
        }
        shared.onServed(endExchange(status: status, closing: true))
        context?.close(promise: nil)
    }
}
