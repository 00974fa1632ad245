// fuzz-modules: Cluster
// A line of a process's log file (its text is whatever the app printed) →
// LogLine.parse, the fixed-width reader `kbuild logs` and trace use.
import Cluster
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let text = fuzzText(start, count)
    guard let line = LogLine.parse(text[...]) else { return 0 }
    let seconds = line.time.timeIntervalSince1970
    require(seconds.isFinite, "time \(seconds) from \(text.debugDescription)")
    require(text.hasSuffix(line.text), "text \(line.text.debugDescription) is not the end of the line")
    // Formatted again (for a time format can write and a one-byte tag), it parses to the same line.
    if seconds >= 0, seconds < 253_402_300_800, line.tag < 0x80 {
        let formatted = LogLine.format(line.time, tag: Character(Unicode.Scalar(line.tag)), String(line.text))
        let again = LogLine.parse(formatted[...])
        require(again != nil, "\(formatted.debugDescription) does not parse")
        if let again {
            require(abs(again.time.timeIntervalSince1970 - seconds) < 2e-6, "time \(seconds) → \(formatted.debugDescription)")
            require(again.tag == line.tag && again.text == line.text, "\(text.debugDescription) → \(formatted.debugDescription)")
        }
    }
    return 0
}
