// An application imports ReshardRouter alone: the map's types (ReshardRouting) and the
// connections it hands out (PostgresClient) come with it.
@_exported import PostgresClient
@_exported import ReshardRouting
