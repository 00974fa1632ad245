public import Foundation

/// The one error type of kbuild. Callers branch on `code`, never on `message`;
/// messages read `failed to <verb> <object>: <reason>`.
public struct KbuildError: Error, Sendable, Equatable, CustomStringConvertible, LocalizedError {
    /// A closed set of reasons.
    public enum Code: String, Sendable {
        /// The caller gave something malformed: a bad KID, ref name, limit or path.
        case invalidArgument
        /// The named thing does not exist.
        case notFound
        /// A KID prefix matches more than one object.
        case ambiguous
        /// A compare-and-swap lost, or the destination already exists.
        case conflict
        /// Stored bytes do not hash to their name, or a record does not decode.
        case corrupt
        /// A system call failed.
        case io
        /// No or a wrong token.
        case unauthorized
        /// A valid token that may not do this (an app token, another app).
        case forbidden
        /// The request is valid but cannot be served (e.g. an unsatisfiable range).
        case unsatisfiable
        /// A request body, upload or stored thing is over its size limit or its owner's quota.
        case tooLarge
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
    public var errorDescription: String? { message }

    /// An error for a failed system call: names the call, its argument and errno.
    public static func syscall(_ call: String, _ argument: String, errno code: Int32 = errno, verb: String) -> KbuildError {
        let reason = String(cString: strerror(code))
        let name = errnoName(code)
        return KbuildError(.io, "failed to \(verb): \(call)(\(argument)): \(reason) (\(name))")
    }

    static func errnoName(_ code: Int32) -> String {
        switch code {
        case ENOENT: "ENOENT"
        case EACCES: "EACCES"
        case EPERM: "EPERM"
        case ELOOP: "ELOOP"
        case EEXIST: "EEXIST"
        case ENOTDIR: "ENOTDIR"
        case EISDIR: "EISDIR"
        case ENOSPC: "ENOSPC"
        case EXDEV: "EXDEV"
        case EMLINK: "EMLINK"
        case EIO: "EIO"
        case EROFS: "EROFS"
        case ENAMETOOLONG: "ENAMETOOLONG"
        default: "errno \(code)"
        }
    }
}

extension KbuildError {
    /// Any error as a KbuildError (errors from other libraries become `.io`).
    public static func wrap(_ error: any Error) -> KbuildError {
        error as? KbuildError ?? KbuildError(.io, "\(error)")
    }
}
