/// The naming rules of the things users name, in one place.
public enum Names {
    /// App names are DNS labels (they become `APP.localhost`): 1 to 63 of
    /// a-z, 0-9 and '-', starting with a letter, not ending with '-'.
    public static func isAppName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard let first = bytes.first, bytes.count <= 63, first >= 0x61, first <= 0x7a, bytes.last != 0x2d else { return false }
        return bytes.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d }
    }

    /// Stack and buildpack names: 1 to 64 of a-z 0-9 . _ -, starting with a letter or digit.
    public static func isStoreName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64 && name.utf8.enumerated().allSatisfy { i, c in
            (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || (i > 0 && (c == 0x2e || c == 0x5f || c == 0x2d))
        }
    }
}
