package console

// countryShape is one country's outline on the world map.
type countryShape struct {
	Code string // ISO 3166-1 alpha-2
	Path string // SVG path data in the map's view box
}
