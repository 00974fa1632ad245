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
