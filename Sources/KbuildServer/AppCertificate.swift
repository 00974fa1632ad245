public import Foundation
import Crypto
import KbuildCore
public import KbuildState
import NIOSSL
import SwiftASN1
import X509

/// The checks a certificate and key pass before an app may keep them (`certs:add`), and the
/// self-signed ones `certs:generate` makes. Pure functions of the PEMs and the time.
public enum AppCertificate {
    /// The stored form of `chainPEM` (leaf first) and `keyPEM`, once they are found to be a
    /// certificate valid at `now`, naming at least one DNS name, and the key its own.
    public static func check(chainPEM: String, keyPEM: String, source: String = "upload", now: Date = Date()) throws -> StoredCertificate {
        let documents = (try? PEMDocument.parseMultiple(pemString: chainPEM)) ?? []
        let blocks = documents.filter { $0.discriminator == "CERTIFICATE" }
        guard !blocks.isEmpty else {
            throw KbuildError(.invalidArgument, "invalid certificate: the file holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        }
        guard blocks.count <= 10 else { throw KbuildError(.invalidArgument, "invalid certificate: a chain of \(blocks.count) certificates (at most 10)") }
        let chain: [Certificate]
        do {
            chain = try blocks.map { try Certificate(pemDocument: $0) }
        } catch {
            throw KbuildError(.invalidArgument, "invalid certificate: it does not parse (\(error))")
        }
        let leaf = chain[0]
        let key: Certificate.PrivateKey
        do {
            key = try Certificate.PrivateKey(pemEncoded: keyPEM)
        } catch {
            throw KbuildError(.invalidArgument, "invalid key: not a PEM private key (RSA, EC P-256/384/521 or PKCS#8) that parses")
        }
        guard key.publicKey == leaf.publicKey else {
            throw KbuildError(.invalidArgument, "the key does not match the certificate: it is the key of another certificate")
        }
        let stamp = ISO8601DateFormatter()
        guard now < leaf.notValidAfter else {
            throw KbuildError(.invalidArgument, "the certificate expired on \(stamp.string(from: leaf.notValidAfter))")
        }
        guard leaf.notValidBefore <= now else {
            throw KbuildError(.invalidArgument, "the certificate is not valid until \(stamp.string(from: leaf.notValidBefore))")
        }
        var names: [String] = []
        if let alternatives = try? leaf.extensions.subjectAlternativeNames {
            for name in alternatives { if case .dnsName(let dns) = name { names.append(dns.lowercased()) } }
        }
        if names.isEmpty, let commonName = leaf.subject.commonName { names.append(commonName.lowercased()) }
        names = names.filter { !$0.isEmpty && $0.utf8.count <= 253 }
        guard !names.isEmpty else { throw KbuildError(.invalidArgument, "invalid certificate: it names no DNS name") }
        // What the router loads, so nothing it would refuse is kept.
        do {
            _ = try NIOSSLCertificate.fromPEMBytes(Array(chainPEM.utf8))
            _ = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)
        } catch {
            throw KbuildError(.invalidArgument, "invalid certificate or key: the TLS library refuses it (\(error))")
        }
        var der = DER.Serializer()
        try der.serialize(leaf)
        let id = SHA256.hash(data: der.serializedBytes).prefix(8).map { String(format: "%02x", $0) }.joined()
        let pem = try chain.map { try $0.serializeAsPEM().pemString }.joined(separator: "\n") + "\n"
        return StoredCertificate(id: id, names: Array(Set(names)).sorted(), subject: leaf.subject.description, issuer: leaf.issuer.description,
                                 notBefore: leaf.notValidBefore, notAfter: leaf.notValidAfter, selfSigned: leaf.subject == leaf.issuer,
                                 source: source, addedAt: now, chainPEM: pem, keyPEM: keyPEM)
    }

    /// A self-signed certificate and key (PEM) for `names`, valid from `from` to `until`.
    public static func selfSigned(names: [String], from: Date = Date() - 3600, until: Date = Date() + 90 * 86400) throws -> (chain: String, key: String) {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { OrganizationName("kbuild"); CommonName(names.first ?? "kbuild") }
        let cert = try Certificate(version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
                                   notValidBefore: from, notValidAfter: until, issuer: name, subject: name,
                                   signatureAlgorithm: .ecdsaWithSHA256,
                                   extensions: try Certificate.Extensions {
                                       Critical(BasicConstraints.notCertificateAuthority)
                                       Critical(KeyUsage(digitalSignature: true))
                                       try ExtendedKeyUsage([.serverAuth])
                                       SubjectAlternativeNames(names.map { .dnsName($0) })
                                   },
                                   issuerPrivateKey: .init(key))
        return (try cert.serializeAsPEM().pemString + "\n", key.pemRepresentation + "\n")
    }
}

extension DistinguishedName {
    var commonName: String? {
        for rdn in self {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                return attribute.value.description
            }
        }
        return nil
    }
}
