public import Foundation

/// The package's root directory (the one holding `Package.swift`), found by walking up from
/// this source file, so that a test keeps finding it wherever its own file moves.
public let packageRoot: URL = {
  var directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
  while directory.path != "/" {
    if FileManager.default.fileExists(atPath: directory.appending(path: "Package.swift").path) {
      return directory
    }
    directory.deleteLastPathComponent()
  }
  fatalError("no Package.swift above \(#filePath)")
}()

/// The path of the product `name` built next to the running test bundle (`swift build` builds
/// every product before `swift test` runs, in whichever scratch path the tests come from).
public func builtProduct(_ name: String) -> String {
  Bundle.main.bundleURL.appendingPathComponent(name).path
}
