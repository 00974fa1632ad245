import KbuildCore
import Foundation
import Crypto
public import NIOSSL
import SwiftASN1
import X509

/// The API's TLS identity between machines: a CA of this kbuild's own, made
/// on first start (or the operator's certificate and key), and a server
/// certificate it signs for every address of this machine. Clients pin the
/// CA by its hash (`caHash`, in every join command, as `kubeadm join`'s
/// `--discovery-token-ca-cert-hash` does), so the first connection of a new
/// node cannot be intercepted. Keys are written 0600 and never logged.
///
/// Files under DATA/tls: ca.crt, ca.key, server.crt, server.key. The server
/// certificate is made again at start when its names changed or it has less
/// than 30 days left; the CA lasts 10 years.
public struct ServerTLS: Sendable {
    /// PEM of the CA (what clients trust).
    public let caPEM: String
    /// "sha256:HEX" of the CA certificate's DER bytes.
    public let caHash: String
    let chain: [NIOSSLCertificate]
    let key: NIOSSLPrivateKey

    /// The server side of TLS 1.2+ with this identity.
    public func configuration() -> TLSConfiguration {
        var c = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        c.minimumTLSVersion = .tlsv12
        return c
    }

    /// The identity in `directory`, made or renewed as needed, naming `hosts` (IP addresses or DNS names).
    public static func loadOrCreate(directory: String, hosts: [String]) throws -> ServerTLS {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let caCertPath = directory + "/ca.crt", caKeyPath = directory + "/ca.key"
        let certPath = directory + "/server.crt", keyPath = directory + "/server.key"
        let ca: Certificate, caKey: P256.Signing.PrivateKey
        if FileManager.default.fileExists(atPath: caCertPath) {
            ca = try Certificate(pemEncoded: try String(contentsOfFile: caCertPath, encoding: .utf8))
            caKey = try P256.Signing.PrivateKey(pemRepresentation: try String(contentsOfFile: caKeyPath, encoding: .utf8))
        } else {
            caKey = P256.Signing.PrivateKey()
            let name = try DistinguishedName { OrganizationName("kbuild"); CommonName("kbuild CA \(UUID().uuidString.prefix(8).lowercased())") }
            ca = try Certificate(version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(caKey.publicKey),
                                 notValidBefore: Date() - 3600, notValidAfter: Date() + 3650 * 86400, issuer: name, subject: name,
                                 signatureAlgorithm: .ecdsaWithSHA256,
                                 extensions: try Certificate.Extensions {
                                     Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                                     Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                                 },
                                 issuerPrivateKey: .init(caKey))
            try write(caKey.pemRepresentation, to: caKeyPath, mode: 0o600)
            try write(try ca.serializeAsPEM().pemString, to: caCertPath, mode: 0o644)
        }
        let names = Self.names(hosts)
        var current: Certificate? = nil
        var currentKey: P256.Signing.PrivateKey? = nil
        if FileManager.default.fileExists(atPath: certPath), FileManager.default.fileExists(atPath: keyPath) {
            current = try? Certificate(pemEncoded: try String(contentsOfFile: certPath, encoding: .utf8))
            currentKey = try? P256.Signing.PrivateKey(pemRepresentation: try String(contentsOfFile: keyPath, encoding: .utf8))
        }
        // Made again when the names changed, it runs out within 30 days, the CA did not sign it, or its key is not its own
        // (a crash between the two renames below).
        let renew = current.map { c in
            let have = (try? c.extensions.subjectAlternativeNames).flatMap { $0 }.map { Set($0) } ?? []
            let signed = ca.publicKey.isValidSignature(c.signature, for: c)
            let ownKey = currentKey.map { Certificate.PublicKey($0.publicKey) == c.publicKey } ?? false
            return have != Set(names) || c.notValidAfter < Date() + 30 * 86400 || c.issuer != ca.subject || !signed || !ownKey
        } ?? true
        if renew {
            let key = P256.Signing.PrivateKey()
            let subject = try DistinguishedName { OrganizationName("kbuild"); CommonName("kbuild API") }
            let cert = try Certificate(version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
                                       notValidBefore: Date() - 3600, notValidAfter: Date() + 397 * 86400, issuer: ca.subject, subject: subject,
                                       signatureAlgorithm: .ecdsaWithSHA256,
                                       extensions: try Certificate.Extensions {
                                           Critical(BasicConstraints.notCertificateAuthority)
                                           Critical(KeyUsage(digitalSignature: true))
                                           try ExtendedKeyUsage([.serverAuth])
                                           SubjectAlternativeNames(names)
                                       },
                                       issuerPrivateKey: .init(caKey))
            try write(key.pemRepresentation, to: keyPath, mode: 0o600)
            try write(try cert.serializeAsPEM().pemString, to: certPath, mode: 0o644)
        }
        let caPEM = try String(contentsOfFile: caCertPath, encoding: .utf8)
        return ServerTLS(caPEM: caPEM, caHash: try Self.hash(pem: caPEM),
                         chain: try NIOSSLCertificate.fromPEMFile(certPath), key: try NIOSSLPrivateKey(file: keyPath, format: .pem))
    }

    /// A self-signed certificate and its key (PEM) for a server of kbuild's
    /// own making (an add-on's PostgreSQL), naming `hosts`; ten years.
    public static func selfSigned(commonName: String, hosts: [String]) throws -> (certificate: String, key: String) {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { OrganizationName("kbuild"); CommonName(commonName) }
        let cert = try Certificate(version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
                                   notValidBefore: Date() - 3600, notValidAfter: Date() + 3650 * 86400, issuer: name, subject: name,
                                   signatureAlgorithm: .ecdsaWithSHA256,
                                   extensions: try Certificate.Extensions {
                                       Critical(BasicConstraints.notCertificateAuthority)
                                       Critical(KeyUsage(digitalSignature: true))
                                       try ExtendedKeyUsage([.serverAuth])
                                       SubjectAlternativeNames(names(hosts))
                                   },
                                   issuerPrivateKey: .init(key))
        return (try cert.serializeAsPEM().pemString, key.pemRepresentation)
    }

    /// The names a server certificate carries: each host as an IP address or a DNS name, always localhost and 127.0.0.1.
    static func names(_ hosts: [String]) -> [GeneralName] {
        var out: [GeneralName] = []
        for host in ["localhost", "127.0.0.1"] + hosts where !host.isEmpty && host != "0.0.0.0" {
            var v4 = in_addr()
            let name: GeneralName = inet_pton(AF_INET, host, &v4) == 1
                ? .ipAddress(ASN1OctetString(contentBytes: ArraySlice(withUnsafeBytes(of: v4) { Array($0) })))
                : .dnsName(host.lowercased())
            if !out.contains(name) { out.append(name) }
        }
        return out
    }

    /// "sha256:HEX" of a PEM certificate's DER bytes: what a join command pins.
    public static func hash(pem: String) throws -> String {
        let der = try NIOSSLCertificate(bytes: Array(pem.utf8), format: .pem).toDERBytes()
        return "sha256:" + SHA256.hash(data: der).map { String(format: "%02x", $0) }.joined()
    }

    /// Writes `text` whole, durably, under a temporary name of its own, then renames it into place.
    static func write(_ text: String, to path: String, mode: mode_t) throws {
        let tmp = path + ".\(getpid()).tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw KbuildError.syscall("open", tmp, verb: "write the API's TLS identity") }
        let bytes = Array(text.utf8)
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let synced = fchmod(fd, mode) == 0 && fsync(fd) == 0
        close(fd)
        guard n == bytes.count, synced, rename(tmp, path) == 0 else {
            unlink(tmp)
            throw KbuildError.syscall("write", path, verb: "write the API's TLS identity")
        }
    }
}
