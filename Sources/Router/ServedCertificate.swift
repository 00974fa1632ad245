import NIOSSL

/// A certificate chain and its key, loaded once for serving by SNI: the route feed makes one per
/// stored certificate when it first sees it, so a TLS handshake only picks it from the table.
public final class ServedCertificate: Sendable {
    public let id: String
    let chain: [NIOSSLCertificate]
    let key: NIOSSLPrivateKey

    public init(id: String, chainPEM: String, keyPEM: String) throws {
        self.id = id
        self.chain = try NIOSSLCertificate.fromPEMBytes(Array(chainPEM.utf8))
        self.key = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)
    }

    var override: NIOSSLContextConfigurationOverride {
        var override = NIOSSLContextConfigurationOverride()
        override.certificateChain = chain.map { .certificate($0) }
        override.privateKey = .privateKey(key)
        return override
    }
}

/// The router's HTTPS listener: TLS with SNI over the apps' certificates, HTTP/2 or HTTP/1.1 by ALPN.
public struct HTTPSListener: Sendable {
    public var host: String
    public var port: Int
    /// A certificate the TLS library needs to start with; never sent (a handshake naming no host the
    /// table has a certificate for is refused).
    public var placeholder: ServedCertificate
    public var onBound: @Sendable (Int) -> Void

    public init(host: String, port: Int, placeholder: ServedCertificate, onBound: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.host = host
        self.port = port
        self.placeholder = placeholder
        self.onBound = onBound
    }
}
