// fuzz-modules: GitGateway KbuildCore
// An OpenSSH public key line (`kbuild keys:add`) → SSHKeys.parsePublicKey.
import Foundation
@testable import GitGateway
import KbuildCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let text = fuzzText(start, count)
    guard let key = try? SSHKeys.parsePublicKey(text) else { return 0 }
    require(SSHKeys.types.contains(key.type), "type \(key.type.debugQuoted)")
    // The blob starts with the length-prefixed type, as the wire format says.
    let blob = [UInt8](key.blob)
    require(blob.count > 4, "blob of \(blob.count) bytes")
    let length = Int(blob[0]) << 24 | Int(blob[1]) << 16 | Int(blob[2]) << 8 | Int(blob[3])
    require(length == key.type.utf8.count && blob[4..<(4 + length)].elementsEqual(key.type.utf8), "blob does not start with its type")
    // What add() writes into authorized_keys must stay one line.
    require(!key.comment.contains(where: \.isNewline), "comment \(key.comment.debugQuoted) has a newline")
    // The key written back the canonical way reads the same.
    let line = key.comment.isEmpty ? "\(key.type) \(key.blob.base64EncodedString())" : "\(key.type) \(key.blob.base64EncodedString()) \(key.comment)"
    let again = try? SSHKeys.parsePublicKey(line)
    require(again?.type == key.type && again?.blob == key.blob && again?.comment == key.comment, "\(line.debugQuoted) reads differently")
    return 0
}
