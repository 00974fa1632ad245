// Compiled into every fuzz target (scripts/fuzz.sh).

/// The input's bytes.
func fuzzBytes(_ start: UnsafeRawPointer, _ count: Int) -> [UInt8] {
    Array(UnsafeRawBufferPointer(start: start, count: count))
}

/// The input as text, as a server holds it after decoding UTF-8 (invalid bytes become U+FFFD).
func fuzzText(_ start: UnsafeRawPointer, _ count: Int) -> String {
    String(decoding: UnsafeRawBufferPointer(start: start, count: count), as: UTF8.self)
}

/// A parser broke its contract: stop, so that libFuzzer keeps the input.
func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
             file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { fatalError("contract broken: \(message())", file: file, line: line) }
}

/// What `parse` returns, or nil when it refused the input as its contract
/// says (`isRefusal` holds of the error); any other error breaks the contract.
func parsedOrRefused<T>(_ parse: () throws -> T, isRefusal: (any Error) -> Bool) -> T? {
    do {
        return try parse()
    } catch {
        require(isRefusal(error), "threw \(error), not the parser's refusal")
        return nil
    }
}
