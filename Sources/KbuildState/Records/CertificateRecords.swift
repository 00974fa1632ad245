public import Foundation

/// An app's TLS certificates (`kbuild certs:add`, `certs:generate`), which the router serves by SNI
/// for the app's domains on its HTTPS port. Each keeps its private key: the record lives in the
/// state (Keg and etcd, readable by root only) and never leaves the control plane through the API,
/// which answers `CertificateInfo`, never the PEMs. An ACME client would fill the same record
/// (`source: "acme"`), renewing by `notAfter`.
public struct AppCertificates: Codable, Sendable, Equatable {
    public var kind = "kbuild.certificates/v1"
    public var certificates: [StoredCertificate]

    public init(_ certificates: [StoredCertificate]) {
        self.certificates = certificates.sorted { $0.id < $1.id }
    }

    /// Certificates an app may keep.
    public static let maxPerApp = 20

    /// The certificate to serve for `host` at `now`: one that covers it and is valid, the one valid longest.
    public func best(for host: String, at now: Date) -> StoredCertificate? {
        certificates.filter { $0.covers(host) && $0.notBefore <= now && now < $0.notAfter }.max { $0.notAfter < $1.notAfter }
    }
}

public struct StoredCertificate: Codable, Sendable, Equatable {
    /// The first 16 hex digits of the leaf certificate's SHA-256.
    public var id: String
    /// The DNS names the leaf certificate is for (its subject alternative names, or its common name without any).
    public var names: [String]
    public var subject: String
    public var issuer: String
    public var notBefore: Date
    public var notAfter: Date
    public var selfSigned: Bool
    /// `upload` (certs:add), `generated` (certs:generate); an ACME client would say `acme`.
    public var source: String
    public var addedAt: Date
    /// The leaf first, then its intermediates.
    public var chainPEM: String
    public var keyPEM: String

    public init(id: String, names: [String], subject: String, issuer: String, notBefore: Date, notAfter: Date, selfSigned: Bool,
                source: String, addedAt: Date, chainPEM: String, keyPEM: String) {
        self.id = id
        self.names = names
        self.subject = subject
        self.issuer = issuer
        self.notBefore = notBefore
        self.notAfter = notAfter
        self.selfSigned = selfSigned
        self.source = source
        self.addedAt = addedAt
        self.chainPEM = chainPEM
        self.keyPEM = keyPEM
    }

    /// Whether the certificate is for `host`: one of its names, or a wildcard `*.example.com` for one label more.
    public func covers(_ host: String) -> Bool {
        let host = host.lowercased()
        return names.contains { name in
            if name == host { return true }
            guard name.hasPrefix("*."), let dot = host.firstIndex(of: ".") else { return false }
            return host[host.index(after: dot)...] == name.dropFirst(2) && !host[..<dot].isEmpty
        }
    }

    /// What the API shows of it: never the key or the chain.
    public func info(domains: [String]) -> API.CertificateInfo {
        API.CertificateInfo(id: id, names: names, subject: subject, issuer: issuer, notBefore: notBefore, notAfter: notAfter,
                            selfSigned: selfSigned, source: source, addedAt: addedAt, serves: domains.filter(covers))
    }
}

extension API {
    /// A certificate as `kbuild certs` shows it.
    public struct CertificateInfo: Codable, Sendable, Equatable {
        public var id: String
        public var names: [String]
        public var subject: String
        public var issuer: String
        public var notBefore: Date
        public var notAfter: Date
        public var selfSigned: Bool
        public var source: String
        public var addedAt: Date
        /// The app's hosts it covers.
        public var serves: [String]
    }

    /// `certs:add`: a PEM chain (leaf first) and its PEM private key.
    public struct CertificateUpload: Codable, Sendable {
        public var chain: String
        public var key: String
        public init(chain: String, key: String) {
            self.chain = chain
            self.key = key
        }
    }
}
