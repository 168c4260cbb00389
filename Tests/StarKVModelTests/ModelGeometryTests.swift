import Testing
@testable import StarKVModel

@Suite struct ModelGeometryTests {
    @Test func sevenBParameterCountMatchesSpecTable() {
        let m = ModelPresets.qwen25VL7B
        // docs/memory-model.md §1.3, computed from shapes.
        #expect(m.parametersPerDecoderLayer == 233_057_792)
        #expect(m.languageModelParameters == 7_615_616_512)
        #expect(m.visionParameters == 676_550_144)
        #expect(m.totalParameters == 8_292_166_656)
    }

    @Test func kvBytesPerTokenAtGQAAndExpandedWidth() {
        let m = ModelPresets.qwen25VL7B
        #expect(m.kvBytesPerToken(storedHeads: 4) == 57_344)
        #expect(m.kvBytesPerToken(storedHeads: 28) == 401_408)
    }

    @Test func queryHeadsMapToConsecutiveKVHeads() {
        let m = ModelPresets.qwen25VL7B
        #expect(m.queryHeadsPerKVHead == 7)
        #expect(m.kvHead(ofQueryHead: 0) == 0)
        #expect(m.kvHead(ofQueryHead: 6) == 0)
        #expect(m.kvHead(ofQueryHead: 7) == 1)
        #expect(m.kvHead(ofQueryHead: 27) == 3)
    }

    @Test func presetsResolveByIdAndAliasCaseInsensitively() {
        #expect(ModelPresets.named("UI-TARS-1.5-7B")?.id == "qwen2.5-vl-7b")
        #expect(ModelPresets.named("qwen2.5-vl-72b")?.numLayers == 80)
        #expect(ModelPresets.named("gpt-5") == nil)
    }
}

@Suite struct SmartResizeTests {
    // docs/memory-model.md §2.4, hand-checked: 1080/28 = 38.57 → 39 rows, 1920/28 = 68.57 → 69 cols.
    @Test(arguments: [
        (1920, 1080, 2691), (1280, 720, 1196), (1366, 768, 1323), (2560, 1440, 4641),
        (3840, 2160, 10549), (1080, 2400, 3354), (1440, 3120, 5661), (2880, 1800, 6592),
    ])
    func visualTokenCountsMatchSpecTable(width: Int, height: Int, tokens: Int) throws {
        let grid = try ImageResizer.uiTars15.tokenGrid(width: width, height: height)
        #expect(grid.visualTokens == tokens)
        #expect(grid.patches == 4 * tokens)
    }

    @Test func resizedSidesAreMultiplesOfTheFactor() throws {
        let r = try ImageResizer.uiTars15.resize(width: 1920, height: 1080)
        #expect(r.width == 1932 && r.height == 1092)
    }

    @Test func smallImagesAreScaledUpToMinPixels() throws {
        let grid = try ImageResizer.uiTars15.tokenGrid(width: 100, height: 100)
        #expect(grid.resizedWidth * grid.resizedHeight >= 78_400)
        #expect(grid.visualTokens == 100)
    }

    @Test func lowerMaxPixelsCapsTokens() throws {
        // UI-TARS 1.0 bound (2700·28²): 3840x2160 → 2622 tokens (docs/memory-model.md §2.4).
        let r = ImageResizer(minPixels: 3136, maxPixels: 2_116_800)
        #expect(try r.tokenGrid(width: 3840, height: 2160).visualTokens == 2622)
    }

    @Test func extremeAspectRatioIsRefused() {
        #expect(throws: ImageResizer.ResizeError.self) {
            try ImageResizer.uiTars15.resize(width: 30_000, height: 10)
        }
    }

    @Test func screenSizeParsing() {
        #expect(ScreenSize(parsing: "1920x1080") == ScreenSize(width: 1920, height: 1080))
        #expect(ScreenSize(parsing: "1920") == nil)
        #expect(ScreenSize(parsing: "0x10") == nil)
        #expect(ScreenSize(parsing: "axb") == nil)
    }
}
