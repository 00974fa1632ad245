import Foundation
import KbuildCore
import Synchronization

/// Runs `body` for 0..<iterations on every core (Dispatch's concurrentPerform)
/// and rethrows the first error; once one iteration fails, those not yet
/// started are skipped.
func parallelFor(_ iterations: Int, _ body: (Int) throws -> Void) throws {
    let failure = Mutex<KbuildError?>(nil)
    withoutActuallyEscaping(body) { body in
        let work = UnsafeSendable(body)
        DispatchQueue.concurrentPerform(iterations: iterations) { i in
            guard failure.withLock({ $0 == nil }) else { return }
            do {
                try work.value(i)
            } catch {
                failure.withLock { if $0 == nil { $0 = KbuildError.wrap(error) } }
            }
        }
    }
    if let error = failure.withLock({ $0 }) { throw error }
}

extension Keg {
    /// write(2) until every byte is written; false on an error (errno is set).
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            done += n
        }
        return true
    }
}
